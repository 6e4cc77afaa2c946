"""End to end over real HTTP: ``fyp import kuairand`` (smoke sample) into a data dir, then
``fyp serve`` on it as a subprocess on an ephemeral port, then feeds for imported users
and a new one, checked against the invariants a user would notice."""

from __future__ import annotations

import itertools
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

from fyp.catalog.store import SqliteCatalogStore
from fyp.events.log import SqliteEventLog
from fyp.privacy.pseudonym import Pseudonyms
from fyp.types import EventType, now_ms
from server_process import FYP, Server, fyp_env

pytestmark = [pytest.mark.kuairand, pytest.mark.slow]

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kuairand-pure"
SMOKE = "smoke_2000.parquet"
VIDEO_FEATURES = "video_features_basic_pure.csv"
NEW_USER = "e2e-new-user"


@dataclass(frozen=True)
class Imported:
    data_dir: Path
    creator_of: dict[str, str]  # video_id -> creator_id, the whole catalog
    viewed: dict[str, set[str]]  # user_id -> videos viewed in the imported log
    events: int


KUAIRAND_USERS = 27_285  # KuaiRand-Pure's user ids are 0 .. 27284


@pytest.fixture(scope="module")
def imported(
    tmp_path_factory: pytest.TempPathFactory, unavailable: Callable[[str], NoReturn]
) -> Imported:
    if not DATA.is_dir():
        unavailable(f"KuaiRand data not found at {DATA}; runs where ../shared/data is present")
    # The importer reads every log in the folder: give it the smoke sample only.
    source = tmp_path_factory.mktemp("kuairand-smoke")
    for name in (SMOKE, VIDEO_FEATURES):
        (source / name).symlink_to(DATA / name)
    data_dir = tmp_path_factory.mktemp("fyp-data")
    done = subprocess.run(
        [FYP, "import", "kuairand", str(source), "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        env=fyp_env(),
    )
    assert done.returncode == 0, done.stdout + done.stderr

    catalog = SqliteCatalogStore(data_dir / "catalog.db")
    log = SqliteEventLog(data_dir / "events.db")
    # The log holds pseudonyms; KuaiRand's user ids are small integers, so their
    # pseudonyms (with the secret beside the data dir) map the log back to them.
    secret = data_dir.with_name(data_dir.name + ".secret")
    pseudonyms = Pseudonyms.from_file(secret, data_dir, create=False)
    user_of = {pseudonyms.of(str(u)): str(u) for u in range(KUAIRAND_USERS)}
    try:
        creator_of = {v.video_id: v.creator_id for v in catalog.all()}
        viewed: dict[str, set[str]] = {}
        for logged in log.iter_all():
            e = logged.event
            if e.type is EventType.VIEW:
                viewed.setdefault(user_of[e.user_id], set()).add(e.video_id)
        events = log.count()
    finally:
        catalog.close()
        log.close()
    assert len(creator_of) > 5_000
    assert len(viewed) > 100
    return Imported(data_dir, creator_of, viewed, events)


@pytest.fixture(scope="module")
def server(imported: Imported, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if shutil.which(str(FYP)) is None:
        pytest.fail(f"the fyp command is not installed at {FYP}")
    srv = Server(imported.data_dir, tmp_path_factory.mktemp("logs") / "serve.log")
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    with server.client(30.0) as client:
        yield client


def get_feed(http: httpx.Client, user_id: str, count: int) -> dict[str, Any]:
    resp = http.get("/v1/feed", params={"user_id": user_id, "count": count})
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def check_page(imported: Imported, user_id: str, page: dict[str, Any], count: int) -> list[str]:
    """The invariants of one page; returns its video ids."""
    items = page["items"]
    ids = [i["video_id"] for i in items]
    assert len(items) == count, f"{user_id}: asked for {count}, got {len(items)}"
    assert len(set(ids)) == len(ids), f"{user_id}: duplicates in {ids}"
    assert [i["position"] for i in items] == list(range(count))
    unknown = [v for v in ids if v not in imported.creator_of]
    assert not unknown, f"{user_id}: not in the catalog: {unknown}"
    again = set(ids) & imported.viewed.get(user_id, set())
    assert not again, f"{user_id}: served again videos viewed in the log: {again}"
    creators = [imported.creator_of[v] for v in ids]
    for (a, ca), (b, cb) in itertools.pairwise(zip(ids, creators, strict=True)):
        assert ca != cb, f"{user_id}: {a} and {b} are adjacent and both by {ca}"
    for item in items:
        assert isinstance(item["source"], str)
        assert item["source"]
        assert isinstance(item["reason"], str)
        assert item["reason"]
        assert isinstance(item["score"], float)
    return ids


def test_healthz_reports_the_imported_data(imported: Imported, http: httpx.Client) -> None:
    health = http.get("/healthz").json()
    assert health["status"] == "ok"
    assert health["videos"] == len(imported.creator_of)
    assert health["events"] == imported.events
    assert health["learning_lag"] == 0


def test_feeds_for_imported_and_new_users_keep_the_invariants(
    imported: Imported, http: httpx.Client
) -> None:
    heavy = [u for u, _ in Counter({u: len(v) for u, v in imported.viewed.items()}).most_common(5)]
    light = sorted(u for u, v in imported.viewed.items() if len(v) == 1)[:2]
    users = [*heavy, *light, NEW_USER]
    for user in users:
        served: set[str] = set()
        for count in (10, 10, 25, 1, 50):
            page = get_feed(http, user, count)
            assert page["surface"] == "for_you"
            ids = check_page(imported, user, page, count)
            repeated = served & set(ids)
            assert not repeated, f"{user}: consecutive requests repeated {repeated}"
            served.update(ids)


def test_events_posted_over_http_are_stored_learned_and_not_served_again(
    imported: Imported, http: httpx.Client
) -> None:
    user = "e2e-events-user"
    first = check_page(imported, user, get_feed(http, user, 5), 5)
    events = [
        {
            "event_id": f"e2e-{user}-{i}",
            "user_id": user,
            "video_id": video_id,
            "type": "view",
            "ts": now_ms(),
            "watch_ms": 1_000,
        }
        for i, video_id in enumerate(first)
    ]
    resp = http.post("/v1/events", json={"events": events})
    assert resp.status_code == 200, resp.text
    assert resp.json()["accepted"] == 5

    deadline = time.monotonic() + 10
    while http.get("/healthz").json()["learning_lag"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert http.get("/healthz").json()["learning_lag"] == 0
    viewed = imported.viewed | {user: set(first)}
    second = get_feed(http, user, 10)
    check_page(Imported(imported.data_dir, imported.creator_of, viewed, 0), user, second, 10)


def test_oversized_chunked_body_is_refused_over_http(server: Server, http: httpx.Client) -> None:
    """A body over 5 MB with no Content-Length is cut off at the limit by the server."""
    chunk = b" " * (256 * 1024)
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        yield b'{"events": []}'
        for _ in range(24):  # 6 MB of trailing whitespace
            sent += len(chunk)
            yield chunk

    try:
        resp = http.post("/v1/events", content=body(), headers={"content-type": "application/json"})
    except httpx.TransportError:
        # The server may answer 413 and close while the client is still sending; either
        # way the body was refused. The server must still be up.
        print("chunked 6 MB body: connection closed by the server while sending")
    else:
        print(f"chunked 6 MB body: {resp.status_code} after {sent:,} bytes of padding sent")
        assert resp.status_code == 413, resp.text
        assert "limit" in resp.json()["detail"]
    assert http.get("/healthz").status_code == 200
    assert server.proc.poll() is None
