#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine: installs redis-server and a venv when missing.
# Extra arguments go to pytest, e.g. `bash tests/run.sh --skip-slow` to leave out the real-engine tests.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)  # a TLS (rediss://) test makes its own certificate
python3 -c "import ensurepip, venv" >/dev/null 2>&1 || need_apt+=(python3-venv)
# the image test: buildah builds and runs the Dockerfile on a debootstrapped base that podman imports
command -v buildah >/dev/null 2>&1 || need_apt+=(buildah)
command -v podman >/dev/null 2>&1 || need_apt+=(podman)
command -v debootstrap >/dev/null 2>&1 || need_apt+=(debootstrap)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,dev]'
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
