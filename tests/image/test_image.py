"""The real Dockerfile, built with buildah on a local stand-in for python:3.11-slim and run as its image says.

No registry is reachable here and no container runtime can start containers, but buildah's chroot isolation
can build and run: the stand-in base is Debian bookworm from debootstrap (python3, python3-venv,
ca-certificates), imported once with podman and cached between runs (CONVOSTORE_IMAGE_CACHE, default
/var/cache/convostore-test-images, keyed by BASE_VERSION). What the build needs from this host to reach the
package index (pip's index and proxy settings, the CA bundle) is passed as build secrets, which only the
install step sees, and the test checks none of it lands in the image.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.redis_servers import RedisServer, free_port, spawn_process, stop_process
from tests.helm.chart import container as chart_container
from tests.helm.chart import render

REPO = Path(__file__).resolve().parents[2]
# Bump to rebuild the cached base (e.g. when the package list changes).
BASE_VERSION = "bookworm-python3-1"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
BASE_IMAGE = f"localhost/convostore-test-base:{BASE_VERSION}"
DEBIAN_MIRROR = os.environ.get("CONVOSTORE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
CACHE_DIR = Path(os.environ.get("CONVOSTORE_IMAGE_CACHE", "/var/cache/convostore-test-images"))
# Where the Dockerfile's install step mounts the `ca.crt` build secret.
BUILD_CA_PATH = "/run/secrets/ca.crt"
# Slimmed away the way python:*-slim is: package caches and indexes, docs, translations.
SLIMMED_AWAY = ("var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/locale")
# What python:3.11-slim has in its config and a bare imported tree lacks.
BASE_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8")

# Run by the image's Python: what the build may have left behind, and what the venv holds.
IMAGE_INVENTORY = """
import importlib.util, json, os, sidecar
borrowed = ["/etc/pip.conf", "/run/secrets", "/root/.cache/pip", "/src"]
extras = ["pytest", "hypothesis", "openai", "litellm", "mypy", "ruff"]
print(json.dumps({
    "borrowed": [p for p in borrowed if os.path.exists(p)],
    "test_extras": [m for m in extras if importlib.util.find_spec(m)],
    "sidecar": sidecar.__file__,
}))
"""


def _run(argv: list[str], *, timeout: float, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv[:3])} … exited {result.returncode}:\n{(result.stdout + result.stderr)[-4000:]}"
        )
    return result


def _skip_unless_buildah_can_work() -> None:
    if os.geteuid() != 0:
        pytest.skip("the image test needs root: buildah's chroot isolation and debootstrap run as root")
    missing = [tool for tool in ("buildah", "podman", "debootstrap") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (apt-get install buildah podman debootstrap)")
    info = _run(["buildah", "info"], timeout=60, check=False)
    if info.returncode != 0:
        pytest.skip(f"buildah cannot work here: {(info.stderr or info.stdout).strip()[-500:]}")


@contextlib.contextmanager
def _cache_lock() -> Iterator[None]:
    # Two checkouts testing at once must not debootstrap into the same directory.
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _stand_in_base() -> str:
    """The cached base: in container storage, else imported from the cached tree, else debootstrapped."""
    with _cache_lock():
        if _run(["podman", "image", "exists", BASE_IMAGE], timeout=60, check=False).returncode == 0:
            return BASE_IMAGE
        tarball = CACHE_DIR / f"{BASE_VERSION}.tar"
        if not tarball.exists():
            _debootstrap_tarball(tarball)
        changes = [arg for env in BASE_ENV for arg in ("--change", f"ENV {env}")]
        _run(["podman", "import", *changes, str(tarball), BASE_IMAGE], timeout=300)
        return BASE_IMAGE


def _debootstrap_tarball(tarball: Path) -> None:
    rootfs = CACHE_DIR / f"{BASE_VERSION}.rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    try:
        argv = ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}"]
        result = _run([*argv, "bookworm", str(rootfs), DEBIAN_MIRROR], timeout=900, check=False)
        if result.returncode != 0:
            pytest.skip(f"debootstrap cannot work here: {(result.stdout + result.stderr).strip()[-800:]}")
        for junk in SLIMMED_AWAY:
            shutil.rmtree(rootfs / junk, ignore_errors=True)
        partial = tarball.with_suffix(".tar.partial")
        _run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."], timeout=300)
        partial.rename(tarball)
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


def _pip_settings() -> dict[str, str]:
    """pip's settings on this host (files, then PIP_* variables, later ones winning): `pip config list`."""
    listed = _run([sys.executable, "-m", "pip", "config", "list"], timeout=60).stdout
    settings: dict[str, str] = {}
    for line in listed.splitlines():
        match = re.fullmatch(r"[^.]*\.([\w-]+)='(.*)'", line.strip())
        if match:
            settings[match[1]] = match[2]
    return settings


def _build_secrets(workdir: Path) -> list[str]:
    """`--secret` flags that let the build's pip reach the package index the way this host's pip does."""
    settings = _pip_settings()
    lines = ["[global]", "disable-pip-version-check = true"]
    if settings.get("index-url", "").startswith(("http://", "https://")):
        lines.append(f"index-url = {settings['index-url']}")
    # file:// indexes and find-links are paths on this host, meaningless in the build.
    extra = [
        url for url in settings.get("extra-index-url", "").split() if url.startswith(("http://", "https://"))
    ]
    if extra:
        lines.append(f"extra-index-url = {' '.join(extra)}")
    for key in ("trusted-host", "proxy", "timeout", "default-timeout", "retries"):
        if settings.get(key):
            lines.append(f"{key} = {settings[key]}")
    if "proxy" not in settings and (proxy := os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")):
        lines.append(f"proxy = {proxy}")
    secrets = []
    # This host may reach the index through a CA of its own, which the base's bundle lacks.
    host_ca = Path(
        settings.get("cert") or os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"
    )
    if host_ca.is_file():
        lines.append(f"cert = {BUILD_CA_PATH}")
        secrets += ["--secret", f"id=ca.crt,src={host_ca}"]
    pip_conf = workdir / "pip.conf"
    pip_conf.write_text("\n".join(lines) + "\n")
    return [*secrets, "--secret", f"id=pip.conf,src={pip_conf}"]


def _image_config(image: str) -> dict[str, Any]:
    inspected = json.loads(_run(["buildah", "inspect", "--type", "image", image], timeout=60).stdout)
    config: dict[str, Any] = inspected["Docker"]["config"]
    return config


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # the command name (field 2) may hold spaces and parentheses: split after its closing ')'
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def _find_served_process(runner: subprocess.Popen[bytes], argv: list[str], log: Path) -> int:
    """The PID of the entrypoint's Python process, a descendant of `buildah run`."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if runner.poll() is not None:
            raise AssertionError(f"the image's entrypoint exited:\n{log.read_text(errors='replace')[-3000:]}")
        for pid in _descendants(runner.pid):
            cmdline = _cmdline(pid)
            # the script runs under its shebang's interpreter: `…/python3 /opt/venv/bin/convostore serve`
            if cmdline[-len(argv) :] == argv and "python" in Path(cmdline[0]).name:
                return pid
        time.sleep(0.1)
    raise AssertionError(f"no process runs {argv}:\n{log.read_text(errors='replace')[-3000:]}")


def _http(url: str, body: dict[str, object] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def _wait_healthy(base: str, runner: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if runner.poll() is not None:
            raise AssertionError(f"the image's entrypoint exited:\n{log.read_text(errors='replace')[-3000:]}")
        with contextlib.suppress(OSError):
            if _http(f"{base}/convostore/healthz") is not None:
                return
        time.sleep(0.2)
    raise AssertionError(f"the sidecar in the image never became healthy:\n{log.read_text(errors='replace')}")


def _image_size(image: str) -> int:
    return int(_run(["podman", "image", "inspect", "--format", "{{.Size}}", image], timeout=60).stdout)


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:.0f} MB"


@pytest.mark.slow
@pytest.mark.timeout(1200)  # a cold cache debootstraps first (about a minute here, more on a slow mirror)
def test_image_builds_and_serves_the_session_api_as_non_root(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    _skip_unless_buildah_can_work()
    # Asked for only now: where the image cannot be built, no redis-server is started (nor needed).
    redis_server: RedisServer = request.getfixturevalue("redis_server")
    started = time.monotonic()
    base = _stand_in_base()
    base_ready = time.monotonic()

    image = f"localhost/convostore-image-test:{uuid.uuid4().hex[:12]}"
    container = f"convostore-image-test-{uuid.uuid4().hex[:12]}"
    build_log = tmp_path / "build.log"
    runner: subprocess.Popen[bytes] | None = None
    served_pid: int | None = None
    try:
        build = _run(
            [
                "buildah", "bud", "--isolation", "chroot", "--network", "host",
                "--format", "docker",  # OCI image configs cannot carry HEALTHCHECK
                "--pull=never", "--layers=false", "--build-arg", f"PYTHON_IMAGE={base}",
                *_build_secrets(tmp_path), "--file", str(REPO / "Dockerfile"), "--tag", image, str(REPO),
            ],
            timeout=900, check=False,
        )  # fmt: skip
        build_log.write_text(build.stdout + build.stderr)
        assert build.returncode == 0, f"buildah bud failed:\n{build_log.read_text()[-5000:]}"
        built = time.monotonic()

        config = _image_config(image)
        argv = [*(config.get("Entrypoint") or []), *(config.get("Cmd") or [])]
        assert argv[:1] == ["/opt/venv/bin/convostore"] and "serve" in argv, config
        assert config.get("ExposedPorts") == {"8080/tcp": {}}
        assert "CONVOSTORE_LISTEN=0.0.0.0:8080" in config.get("Env", [])
        user = str(config.get("User") or "")
        # Numeric, so Kubernetes' runAsNonRoot can verify it without reading the image's /etc/passwd.
        assert user.split(":")[0].isdigit(), f"USER should be numeric, is {user!r}"
        uid = int(user.split(":")[0])
        assert uid != 0, f"the image runs as root ({user!r})"

        _run(["buildah", "from", "--pull=never", "--name", container, image], timeout=120)
        in_container = ["buildah", "run", "--isolation", "chroot", "--network", "host"]

        # Nothing the build borrowed from this host stayed in the image; the venv holds a regular install
        # of the runtime dependencies, no test extras.
        inventory = json.loads(
            _run(
                [*in_container, container, "--", "/opt/venv/bin/python", "-c", IMAGE_INVENTORY], timeout=60
            ).stdout
        )
        assert inventory["borrowed"] == [], f"build-time files left in the image: {inventory['borrowed']}"
        assert inventory["test_extras"] == [], f"test extras in the image: {inventory['test_extras']}"
        assert inventory["sidecar"].startswith("/opt/venv/lib/"), inventory["sidecar"]

        # The image's own entrypoint, configured by the environment alone.
        port = free_port()
        log = tmp_path / "sidecar.log"
        env = ["--env", f"REDIS_URL={redis_server.url}", "--env", f"CONVOSTORE_LISTEN=127.0.0.1:{port}"]
        runner = spawn_process([*in_container, *env, container, "--", *argv], log_path=log)
        served_pid = _find_served_process(runner, argv, log)
        base_url = f"http://127.0.0.1:{port}"
        _wait_healthy(base_url, runner, log)

        status = Path(f"/proc/{served_pid}/status").read_text()
        uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
        assert uids == [str(uid)] * 4, f"the sidecar runs as uids {uids}, the image says {user!r}"

        conversation = f"image-{uuid.uuid4().hex[:8]}"
        appended = _http(f"{base_url}/v1/sessions/{conversation}/append", {"role": "user", "content": "hi"})
        assert appended["conversation_id"] == conversation and appended["version"] == 1
        resolved = _http(f"{base_url}/v1/sessions/resolve?conversation_id={conversation}")
        assert resolved["messages"] == [{"role": "user", "content": "hi"}]
        assert resolved["version"] == 1

        # The image's HEALTHCHECK, run as written, passes against the live sidecar.
        healthcheck = config["Healthcheck"]["Test"]
        assert healthcheck[0] == "CMD", healthcheck
        check_env = ["--env", f"CONVOSTORE_LISTEN=127.0.0.1:{port}"]
        probe = _run([*in_container, *check_env, container, "--", *healthcheck[1:]], timeout=60, check=False)
        assert probe.returncode == 0, f"HEALTHCHECK failed on a healthy sidecar:\n{probe.stderr[-2000:]}"

        # The chart's preStop hook (gateway mode) is a command this image has.
        gateway = render({"gateway": {"preStopSleepSeconds": 1}}).one("Deployment", "gateway")
        pre_stop = chart_container(gateway)["lifecycle"]["preStop"]["exec"]["command"]
        hook = _run([*in_container, container, "--", *pre_stop], timeout=60, check=False)
        assert hook.returncode == 0, f"the chart's preStop {pre_stop} fails:\n{hook.stderr[-2000:]}"

        # SIGTERM stops it cleanly: exit 0, which `buildah run` passes on.
        os.kill(served_pid, signal.SIGTERM)
        assert runner.wait(timeout=30) == 0, f"exit on SIGTERM:\n{log.read_text(errors='replace')[-3000:]}"
        probe = _run([*in_container, *check_env, container, "--", *healthcheck[1:]], timeout=60, check=False)
        assert probe.returncode != 0, "HEALTHCHECK passed with no sidecar listening"

        size, base_size = (_image_size(name) for name in (image, base))
        du = _run([*in_container, container, "--", "du", "-sk", "/opt/venv"], timeout=60)
        venv_kb = du.stdout.split()[0]
        print(
            f"\nimage {_megabytes(size)} (stand-in base {_megabytes(base_size)}, /opt/venv "
            f"{_megabytes(int(venv_kb) * 1024)}); base ready in {base_ready - started:.0f} s, "
            f"build {built - base_ready:.0f} s, total {time.monotonic() - started:.0f} s"
        )
    finally:
        _stop_entrypoint(runner, served_pid)
        _run(["buildah", "rm", container], timeout=120, check=False)
        _run(["buildah", "rmi", image], timeout=120, check=False)


def _stop_entrypoint(runner: subprocess.Popen[bytes] | None, served_pid: int | None) -> None:
    """Stop what `buildah run` started, by PID: the sidecar first (a killed runner would orphan it)."""
    if runner is None:
        return
    started = _descendants(runner.pid) if runner.poll() is None else []
    if served_pid is not None and served_pid not in started and _cmdline(served_pid):
        started.append(served_pid)
    commands = {pid: _cmdline(pid) for pid in started}
    for pid in reversed(started):  # deepest first: the sidecar, then buildah's chroot helpers
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    stop_process(runner)
    for pid, command in commands.items():
        if command and _cmdline(pid) == command:  # still the same process: it ignored SIGTERM
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
