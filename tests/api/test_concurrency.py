"""Many POSTs at once: every run stored once, and the event loop keeps serving meanwhile."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
from sqlalchemy import select

from dispatch_pipeline.api import routes
from dispatch_pipeline.storage.tables import dispatch_runs

pytestmark = pytest.mark.postgres

CONCURRENT_POSTS = 16


async def _post_all(app, request) -> tuple[list[httpx.Response], int]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test", timeout=60) as client:
        responses = await asyncio.gather(*(
            client.post("/dispatch/run", json={**request, "site_id": f"CONC_{i:02d}"})
            for i in range(CONCURRENT_POSTS)
        ))
    return responses, threading.get_ident()


def test_concurrent_posts_are_all_stored_as_distinct_runs(make_app, engine, sample_request, monkeypatch):
    planned_on: list[int] = []
    plan_and_store = routes.plan_and_store

    def recording_thread(*args):
        planned_on.append(threading.get_ident())
        return plan_and_store(*args)

    monkeypatch.setattr(routes, "plan_and_store", recording_thread)
    app = make_app()

    responses, event_loop_thread = asyncio.run(_post_all(app, sample_request))

    assert [r.status_code for r in responses] == [200] * CONCURRENT_POSTS, [r.text for r in responses]
    run_ids = {r.json()["run_id"] for r in responses}
    assert len(run_ids) == CONCURRENT_POSTS
    with engine.connect() as connection:
        stored = dict(connection.execute(
            select(dispatch_runs.c.id, dispatch_runs.c.site_id).where(dispatch_runs.c.site_id.like("CONC\\_%"))
        ).all())
    assert {str(run_id) for run_id in stored} == run_ids
    assert sorted(stored.values()) == [f"CONC_{i:02d}" for i in range(CONCURRENT_POSTS)]
    # Each solve and its write (~50 ms) ran in a worker thread: the event loop never waited on one.
    assert len(planned_on) == CONCURRENT_POSTS
    assert event_loop_thread not in planned_on
