"""Serve: one model over HTTP (FastAPI + uvicorn) with dynamic batching, limits, metrics and a web page."""

from vislab.serve.app import ServeConfig, create_app, run_server

__all__ = ["ServeConfig", "create_app", "run_server"]
