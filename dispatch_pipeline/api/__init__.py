"""The REST API of the dispatch contract.

    POST /dispatch/run                           plan one site-day, store it (source "api");
                                                 with Idempotency-Key, once per key (idempotency.py)
    GET  /dispatch/latest?site_id=X[&date=D]     the newest stored plan of a site (and local date)
    GET  /dispatch/runs/{run_id}                 one stored run with KPIs and points
    GET  /healthz                                database reachable, solver present (200 / 503)
    GET  /docs, /redoc, /openapi.json            interactive docs and the schema

Every GET endpoint answers HEAD too (head.py). While the database is down, a POST body no
registered site could make valid is still a 422, not a 503.

Run it with `dispatch-pipeline db upgrade` then `dispatch-pipeline serve [--port 8002]`.
Environment: DATABASE_URL (else SQLite under DAGSTER_HOME); DISPATCH_API_TOKENS, comma-separated
`TOKEN` (all sites) or `TOKEN:SITE1|SITE2` entries, turns bearer authentication on for every
endpoint but /healthz (and the docs, which hold no data).
"""

from dispatch_pipeline.api.app import create_app

__all__ = ["create_app"]
