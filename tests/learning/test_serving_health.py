"""A server whose models a learner process trains: /healthz and /metrics report the model
version served, its age and lag, and whether the learner runs; feeds go on meanwhile."""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient

from fyp.api import create_app
from fyp.privacy.keys import bearer, create_key


def test_health_reports_the_models_served_and_the_learner(learning: Any) -> None:
    server = learning.server()
    learning.catalog(server)
    learning.ingest(server, 0, 1_500)
    _, token = create_key(learning.data, label="tests")
    with TestClient(create_app(learning.settings, server), headers=bearer(token)) as client:
        body = client.get("/healthz").json()
        assert body["status"].startswith("degraded: the learner is not running")
        assert body["learned_models"]["version"] == 0
        assert body["learned_models"]["learner"] == "down"
        feed = client.get("/v1/feed", params={"user_id": "u1"})
        assert feed.status_code == 200 and feed.json()["items"]  # the first ranker serves

        learning.learner_thread()
        deadline = time.monotonic() + 60
        while (models := client.get("/healthz").json()["learned_models"])["version"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert models["learner"] == "up" and models["age_s"] < 60
        learning.ingest(server, 1_500, 500, seed=2)
        learning.wait_settled(server, apply=False)  # (the app's poller applies)
        body = client.get("/healthz").json()
        assert body["status"] == "ok"
        assert body["learned_models"]["learner_lag"] == 0
        assert body["learned_models"]["version"] == server.replica.version > 1
        metrics = client.get("/metrics").text
        assert f"fyp_model_version {float(server.replica.version)}" in metrics
        assert "fyp_learner_up 1.0" in metrics
