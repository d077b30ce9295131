"""Serving: export, prediction from raw files, HTTP service, latency benchmarks."""
