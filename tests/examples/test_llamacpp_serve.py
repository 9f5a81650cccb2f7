"""examples/llamacpp/serve.py listens where the sidecar looks for its engine by default."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from urllib.parse import urlsplit

from sidecar.config import Config

SERVE = Path(__file__).resolve().parents[2] / "examples" / "llamacpp" / "serve.py"


def test_the_example_engine_listens_on_the_sidecars_default_upstream() -> None:
    spec = importlib.util.spec_from_file_location("llamacpp_serve", SERVE)
    assert spec is not None and spec.loader is not None
    serve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve)  # the model and xllamacpp are only imported when a server starts
    default = urlsplit(Config.from_env({}).upstream)
    args = serve.parse_args([])
    assert (args.host, args.port) == (default.hostname, default.port) == ("127.0.0.1", 8000)
    assert serve.parse_args(["--port", "8090"]).port == 8090
