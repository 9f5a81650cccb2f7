"""`convostore serve` / `python -m sidecar`: parse flags over the environment, build Config, run."""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import sys
from typing import TYPE_CHECKING

from .config import Config, ConfigError
from .logs import configure_logging

if TYPE_CHECKING:
    from aiohttp import web


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convostore", description="ConvoStore conversation-state sidecar")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the sidecar")
    serve.add_argument("--upstream", help="engine base URL (CONVOSTORE_UPSTREAM)")
    # No argparse `choices`: every value is checked by Config, whose error is one line naming the flag.
    serve.add_argument("--upstream-api", help="auto | responses | chat (CONVOSTORE_UPSTREAM_API)")
    serve.add_argument("--listen", help="host:port (CONVOSTORE_LISTEN)")
    serve.add_argument("--redis-url", help="memory://, redis://, rediss://, unix:// (REDIS_URL)")
    serve.add_argument("--config", dest="config_path", help="policy file (CONVOSTORE_CONFIG)")
    serve.add_argument("--auth", help="none | api_keys | trusted_header (CONVOSTORE_AUTH)")
    serve.add_argument("--ttl-seconds", help="CONVOSTORE_TTL_SECONDS")
    serve.add_argument("--max-body-bytes", help="CONVOSTORE_MAX_BODY_BYTES")
    serve.add_argument("--log-format", help="json | text (CONVOSTORE_LOG_FORMAT)")
    serve.add_argument("--log-level", help="CONVOSTORE_LOG_LEVEL")
    serve.add_argument(
        "--client-timeout-seconds",
        help="time a client gets for headers, then body (CONVOSTORE_CLIENT_TIMEOUT_SECONDS)",
    )
    serve.add_argument(
        "--upstream-timeout-seconds", help="longest engine answer (CONVOSTORE_UPSTREAM_TIMEOUT_SECONDS)"
    )
    serve.add_argument(
        "--drain-seconds", help="on SIGTERM, how long in-flight work gets (CONVOSTORE_DRAIN_SECONDS)"
    )
    serve.add_argument(
        "--workers", help="processes sharing the port, or auto (CONVOSTORE_WORKERS, default auto)"
    )
    serve.add_argument(
        "--ws-idle-seconds", help="an idle Responses WebSocket is closed after (CONVOSTORE_WS_IDLE_SECONDS)"
    )
    webhook = commands.add_parser("webhook", help="run the Kubernetes sidecar injection webhook (HTTPS)")
    webhook.add_argument("--listen", help="host:port (CONVOSTORE_WEBHOOK_LISTEN, default 0.0.0.0:8443)")
    webhook.add_argument("--tls-cert", help="PEM certificate chain (CONVOSTORE_WEBHOOK_TLS_CERT)")
    webhook.add_argument("--tls-key", help="PEM private key (CONVOSTORE_WEBHOOK_TLS_KEY)")
    webhook.add_argument(
        "--tls-reload-seconds", help="how often the key pair is checked for rotation (default 60)"
    )
    webhook.add_argument(
        "--config", dest="config_path", help="injected container, YAML/JSON (CONVOSTORE_WEBHOOK_CONFIG)"
    )
    webhook.add_argument("--sidecar-image", help="image of the injected container")
    webhook.add_argument("--redis-secret-name", help="Secret holding REDIS_URL, in the pod's namespace")
    webhook.add_argument("--redis-secret-key", help="its key (default redis-url)")
    webhook.add_argument("--log-format", help="json | text (CONVOSTORE_LOG_FORMAT)")
    webhook.add_argument("--log-level", help="CONVOSTORE_LOG_LEVEL")
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = vars(_parser().parse_args(argv))
    if args.pop("command") == "webhook":
        _webhook(args)
        return
    try:
        config = Config.from_env(**args)
    except ConfigError as exc:
        print(f"convostore: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if config.workers > 1:
        from .tracing import Tracing
        from .workers import Supervisor

        try:  # read again by every worker when it builds its app; a bad value is one line here, not N
            Tracing.from_env()
        except ConfigError as exc:
            print(f"convostore: configuration error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None

        supervisor = Supervisor(
            argv, config.workers, config.listen_host, config.listen_port, config.drain_seconds
        )
        raise SystemExit(supervisor.run())
    _serve(config)


def _serve(config: Config) -> None:
    """One process serving the port: the only one, or a worker of sidecar/workers.py."""
    from . import workers

    worker = workers.is_worker()
    configure_logging(config.log_format, config.log_level)
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # uvloop is a dependency; a platform without it still runs, only slower
        pass
    from .app import create_app
    from .drain import serve

    def listening() -> None:
        if worker:
            workers.report_ready()  # the supervisor says it once for all of them
        else:
            print(f"convostore: listening on {config.listen}", file=sys.stderr)

    try:
        app = create_app(config)
    except ConfigError as exc:  # settings read when the app is built (tracing)
        print(f"convostore: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if worker and os.environ.get(workers.PID_HEADER_FLAG) == "1":
        app.on_response_prepare.append(_worker_pid_header)
    try:
        asyncio.run(
            serve(
                app,
                host=config.listen_host,
                port=config.listen_port,
                keepalive_timeout=config.client_timeout_seconds,
                on_listening=listening,
                reuse_port=worker,
            )
        )
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise
        print(f"convostore: cannot listen on {config.listen}: {exc.strerror or exc}", file=sys.stderr)
        raise SystemExit(1) from None


async def _worker_pid_header(request: web.Request, response: web.StreamResponse) -> None:
    from .workers import PID_HEADER

    response.headers[PID_HEADER] = str(os.getpid())


def _webhook(args: dict[str, str | None]) -> None:
    from .webhook.config import WebhookConfig
    from .webhook.server import run_webhook

    try:
        config = WebhookConfig.from_env(args)
    except ConfigError as exc:
        print(f"convostore webhook: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(config.log_format, config.log_level)
    run_webhook(config)
