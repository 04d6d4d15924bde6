"""The REST API: POST /dispatch/run, GET /dispatch/latest, GET /dispatch/runs/{run_id}, GET /healthz."""

from dispatch_pipeline.api.app import create_app

__all__ = ["create_app"]
