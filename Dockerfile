# ConvoStore sidecar image: `docker run -d -e REDIS_URL=redis://host:6379 -p 8080:8080 convostore:latest`.
# Configured by the environment alone (CONVOSTORE_* variables, REDIS_URL; see the README), served on :8080
# by a non-root user. Both stages share one base so the venv's interpreter links stay valid; a local base
# with python3 + venv can stand in for it: `--build-arg PYTHON_IMAGE=...`.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# `python3 -m venv` works on python:3.11-slim (/usr/local/bin) and on Debian's python3 (/usr/bin) alike.
RUN python3 -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY lua ./lua
# sidecar/lua is a symlink to ../lua: copied as a link, it resolves inside /src and ships in the wheel.
COPY sidecar ./sidecar
# A regular (non-editable) install of the runtime dependencies only: no test or dev extras.
# A private index, proxy or CA comes in as build secrets, seen by this step only and never stored:
#   --secret id=pip.conf,src=pip.conf  (a pip config file; it may say `cert = /run/secrets/ca.crt`)
#   --secret id=ca.crt,src=/path/to/ca-bundle.crt
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    --mount=type=secret,id=ca.crt \
    /opt/venv/bin/pip install --no-cache-dir . \
    && /opt/venv/bin/convostore --help >/dev/null

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CONVOSTORE_LISTEN=0.0.0.0:8080
RUN groupadd --gid 10001 convostore \
    && useradd --no-log-init --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin convostore
COPY --from=build /opt/venv /opt/venv
# A numeric user, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
USER 10001:10001
EXPOSE 8080
# The slim image has no curl: ask with the venv's Python, on the port CONVOSTORE_LISTEN names.
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/opt/venv/bin/python", "-c", "import os, urllib.request; port = os.environ.get('CONVOSTORE_LISTEN', '0.0.0.0:8080').rpartition(':')[2]; urllib.request.urlopen(f'http://127.0.0.1:{port}/convostore/healthz', timeout=4)"]
# Exec form: convostore is PID 1 and gets SIGTERM itself (aiohttp stops the server and exits 0).
# Arguments after the image name are extra `convostore serve` flags, e.g. `--upstream http://engine:8000`.
ENTRYPOINT ["/opt/venv/bin/convostore", "serve"]
CMD []
