"""Benchmarks: what the sidecar adds per request (`python -m bench`), what the store costs (`bench store`)."""
