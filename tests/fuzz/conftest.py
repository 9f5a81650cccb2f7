"""The in-process sidecar fixtures of the integration suite, for the fuzz suite's regression tests."""

from tests.integration.conftest import engine, make_sidecar, sidecar

__all__ = ["engine", "make_sidecar", "sidecar"]
