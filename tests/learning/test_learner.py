"""The learner apart from serving: what a server serves is what a replay of the log
learns, across kill -9 of either process; versions make applying idempotent; a server
started later catches up; an erased user's rows are in no process and no file; the
supervisor restarts a learner that died."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from typing import Any

import numpy as np
import pytest

from fyp.learning.learner import stop_from_a_signal
from fyp.learning.link import channel_of, read_status
from fyp.learning.priority import thread_ids
from fyp.learning.supervisor import Supervisor
from fyp.model.replica import ModelReplica
from fyp.users.controls import ControlsIn


def test_the_served_models_are_what_a_replay_of_the_log_learns(learning: Any, lkit: Any) -> None:
    server = learning.server()
    learning.catalog(server)
    learning.ingest(server, 0, 1_500)
    for learner in learning.learner_here():  # (trains what is logged at its start)
        assert learning.sync(server) == 1 and server.replica.version == 1
        learning.ingest(server, 1_500, 1_500, seed=1)  # then learns the rest as it comes
        while learner.step():
            pass
        learner.publish()
        assert learning.sync(server) >= 1
        lkit.assert_serves(server.replica, learner.models)
        lkit.assert_serves(server.replica, learning.replay())
        # It serves them: the learned ranker scores, retrieval proposes.
        assert server.replica.ranker.warm and server.replica.retrieval.warm
        assert server.pipeline.ranker.active() == "mmoe"
        feed = server.feed("u3", count=10, now=lkit.NOW)
        assert len(feed.items) == 10
        assert server.pipeline.counters.source_candidates["two_tower"] > 0
        # The same scores as the learner's own models would give.
        pid = server.pseudonym("u3")
        rows = list(range(40))
        mine = server.replica.ranker.predict(
            pid, server.state.users[pid], rows, lkit.NOW, "for_you"
        )
        theirs = learner.models.ranker.predict(
            pid, learner.engine.state.users[pid], rows, lkit.NOW, "for_you"
        )
        np.testing.assert_array_equal(mine[1], theirs[1])
        # The user tower in numpy (serving) as in torch (training).
        history = learner.models.retrieval.pooled(server.state.users[pid].history)
        np.testing.assert_allclose(
            server.replica.retrieval.user_vector(pid, history, lkit.NOW),
            learner.models.retrieval.user_vector(pid, history, lkit.NOW),
            rtol=1e-5,
            atol=1e-6,
        )
        np.testing.assert_allclose(
            server.replica.retrieval.user_vector("never-seen", [], lkit.NOW),
            learner.models.retrieval.user_vector("never-seen", [], lkit.NOW),
            rtol=1e-5,
            atol=1e-6,
        )


def test_a_delta_applied_twice_or_out_of_order_changes_nothing(learning: Any, lkit: Any) -> None:
    server = learning.server()
    learning.catalog(server)
    learning.ingest(server, 0, 1_000)
    for learner in learning.learner_here():
        for part in range(3):
            learning.ingest(server, 1_000 + 300 * part, 300, seed=part + 1)
            while learner.step():
                pass
            learner.publish()
    updates = channel_of(learning.settings).read_after(0)
    assert updates[0].full and len(updates) >= 4 and not any(u.full for u in updates[1:])
    in_order = ModelReplica(learning.settings, server.state)
    for u in updates:
        assert in_order.apply(u)
    shuffled = ModelReplica(learning.settings, server.state)
    assert not shuffled.apply(updates[2])  # before the snapshot: nothing to apply it to
    assert shuffled.apply(updates[0])
    before = lkit.fingerprint(shuffled)
    assert not shuffled.apply(updates[0])  # twice
    assert not shuffled.apply(updates[3])  # out of order (a version skipped)
    assert lkit.fingerprint(shuffled) == before
    for u in updates[1:]:
        assert shuffled.apply(u)
        assert not shuffled.apply(u)  # twice
    assert not shuffled.apply(updates[1])  # an old one, late
    assert lkit.fingerprint(shuffled) == lkit.fingerprint(in_order)
    assert shuffled.status.ignored == 3 + len(updates)


def test_a_server_started_after_the_learner_published_catches_up(learning: Any, lkit: Any) -> None:
    first = learning.server()
    learning.catalog(first)
    learning.ingest(first, 0, 1_500)
    for learner in learning.learner_here():
        learning.ingest(first, 1_500, 500, seed=1)
        while learner.step():
            pass
        learner.publish()
        late = learning.server()  # after the snapshot and a delta: starts from them
        assert late.replica.version == 0
        assert learning.sync(late) >= 2
        assert late.replica.version == learner.publisher.version
        lkit.assert_serves(late.replica, learner.models)


def test_a_server_killed_mid_apply_serves_the_learned_models_once_started_again(
    learning: Any, lkit: Any
) -> None:
    """The server writes nothing of the models: killed halfway through applying a delta,
    its next start reads the snapshot and deltas again."""
    server = learning.server()
    learning.catalog(server)
    learning.ingest(server, 0, 1_500)
    for learner in learning.learner_here():
        learning.sync(server)
        learning.ingest(server, 1_500, 1_500, seed=1)
        while learner.step():
            pass
        learner.publish()
        delta = channel_of(learning.settings).read_after(server.replica.version)[0]
        steps = server.replica.apply_steps(delta)
        next(steps)  # (a first chunk applied; then the process is gone)
        assert server.replica.version == 1
        again = learning.server()
        learning.sync(again)
        lkit.assert_serves(again.replica, learner.models)
        lkit.assert_serves(again.replica, learning.replay())


@pytest.mark.slow  # (learner subprocesses)
def test_kill_9_of_the_learner_mid_training_then_the_served_models_equal_a_replay(
    learning: Any, lkit: Any
) -> None:
    settings = learning.settings_for(learning.data, checkpoint_every_events=700)
    learning.settings = settings
    server = learning.server()
    learning.catalog(server)
    learning.ingest(server, 0, 500)
    proc = learning.learner_process()
    learning.wait_settled(server)
    # A stream while it trains; killed once it has checkpointed and published some.
    for part in range(6):
        learning.ingest(server, 500 + 400 * part, 400, seed=part + 1)
        time.sleep(0.1)
    deadline = time.monotonic() + 60
    while not (learning.data / "learner-checkpoint.pkl").exists() or not (
        (status := read_status(learning.data)) and status.offset > 1_000
    ):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    learning.sync(server)  # what it published before it died
    learning.ingest(server, 3_000, 400, seed=9)
    learning.learner_process("learner-2.log")  # from its checkpoint, then the rest
    learning.wait_settled(server)
    lkit.assert_serves(server.replica, learning.replay())


def _rows_of(server: Any, pid: str) -> list[bytes]:
    """The bytes of the user's rows the server serves (one per model)."""
    held = server.replica.user_vectors(pid).values()
    return [np.asarray(v, np.float32).tobytes() for v in held if v is not None]


def _traces(pid: str, rows: list[bytes]) -> list[bytes]:
    """What of an erased user a file could hold: their rows' bytes, their pseudonym (as
    UTF-8, and as the published files' unicode arrays hold it)."""
    return [*rows, pid.encode(), pid.encode("utf-32-le")]


def test_an_erased_users_rows_are_in_no_process_and_no_file(learning: Any, lkit: Any) -> None:
    server = learning.server()
    learning.catalog(server)
    learning.ingest(server, 0, 2_000)
    learning.learner_thread()  # (in this process: its models can be looked at)
    learning.wait_settled(server)
    pid = server.pseudonym("u7")
    rows = _rows_of(server, pid)
    assert len(rows) == 2  # both models learned a row for them
    assert lkit.scan(learning.data, rows)  # in the published files and the checkpoints
    assert server.rights.erase_user("u7", "test").events > 0  # (it waited for the learner)
    assert not server.replica.holds_user(pid)
    learner = learning.running_learner()
    assert learner.models.user_vectors(pid) == {"ranker": None, "retrieval": None}
    assert pid not in learner.engine.state.users
    assert lkit.scan(learning.data, _traces(pid, rows)) == {}
    learning.wait_settled(server)  # and what it publishes next does not bring them back
    assert not server.replica.holds_user(pid)


def test_an_erasure_while_the_learner_is_down_rewrites_its_files(learning: Any, lkit: Any) -> None:
    server = learning.server()
    learning.catalog(server)
    learning.ingest(server, 0, 2_000)
    for learner in learning.learner_here():
        learning.sync(server)
        learner.engine.checkpoints.write()
    pid = server.pseudonym("u8")
    rows = _rows_of(server, pid)
    assert rows and "learner-checkpoint.pkl" in str(lkit.scan(learning.data, rows))
    server.rights.erase_user("u8", "test")  # (no learner holds its lock: done here)
    assert lkit.scan(learning.data, _traces(pid, rows)) == {}
    assert not server.replica.holds_user(pid)
    for learner in learning.learner_here():  # its next start holds none of it
        assert learner.models.user_vectors(pid) == {"ranker": None, "retrieval": None}
        assert pid not in learner.engine.state.users


def test_a_learner_down_for_an_erasure_carried_out_elsewhere_drops_the_user_at_its_start(
    learning: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The learner is down while a serving process whose data dir is not the learner's
    (``fyp cluster up``'s api-1) erases a user: that process carries the erasure out at
    rest in its own data dir and on the shared channel, not in the learner's checkpoint,
    and the tombstone is gone when the learner starts again. Users are registered, so
    the learner finds the user by their profile gone from the store, and drops them."""
    from fyp.learning import link as link_module

    learning.settings = learning.settings_for(
        learning.data, privacy={"require_registered_users": True}
    )
    server = learning.server()
    learning.catalog(server)
    server.register_users([f"u{i}" for i in range(50)])
    learning.ingest(server, 0, 2_000)
    for learner in learning.learner_here():
        learner.engine.checkpoints.write()
    pid = server.pseudonym("u8")
    # (carried out at rest in another data dir: nothing of the learner's touched)
    monkeypatch.setattr(link_module, "erase_at_rest", lambda settings, user_id: 0)
    server.rights.erase_user("u8", "test")
    for learner in learning.learner_here():  # its next start holds none of it
        assert learner.models.user_vectors(pid) == {"ranker": None, "retrieval": None}
        assert pid not in learner.engine.state.users
        assert server.pseudonym("u9") in learner.engine.state.users  # (others kept)


def _priorities(pid: int) -> set[tuple[int, int]]:
    """The scheduling policies and nice values of process ``pid``'s threads (those that
    last the look)."""
    out = set()
    for tid in thread_ids(pid):
        with contextlib.suppress(ProcessLookupError):
            out.add((os.sched_getscheduler(tid), os.getpriority(os.PRIO_PROCESS, tid)))
    return out


@pytest.mark.slow  # (learner subprocesses)
def test_the_supervisor_restarts_a_learner_that_died(learning: Any) -> None:
    server = learning.server()
    learning.catalog(server)
    learning.ingest(server, 0, 300)
    supervisor = Supervisor(learning.settings, learning.root / "supervised.log")
    supervisor.start()
    try:
        learning.wait_settled(server)
        first = supervisor.pid
        assert first is not None and read_status(learning.data).pid == first
        # serving gets the CPU first: every thread of the learner at the lowered priority
        assert _priorities(first) == {(os.SCHED_OTHER, max(os.getpriority(os.PRIO_PROCESS, 0), 10))}
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while not (supervisor.restarts == 1 and supervisor.alive):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert supervisor.last_exit == -signal.SIGKILL
        learning.ingest(server, 300, 300, seed=2)
        learning.wait_settled(server)  # the new one learns
        assert read_status(learning.data).pid == supervisor.pid != first
    finally:
        supervisor.stop()
    assert not supervisor.alive


def test_an_update_published_before_the_learner_dropped_a_user_does_not_bring_them_back(
    learning: Any,
) -> None:
    server = learning.server()
    learning.catalog(server)
    learning.ingest(server, 0, 1_500)
    for learner in learning.learner_here():
        learning.sync(server)
        pid = server.pseudonym("u7")
        assert server.replica.holds_user(pid)
        # The server erases them; the learner has not seen it yet and publishes rows.
        server.replica.forget_user(pid)
        learning.ingest(server, 1_500, 1_000, seed=1)
        while learner.step():
            pass
        learner.publish()
        before = learner.publisher.version
        assert learning.sync(server) >= 1 and server.replica.version == before
        assert learner.models.user_vectors(pid)["ranker"] is not None  # (it published them)
        assert not server.replica.holds_user(pid)
        # Once the learner has dropped them (at ``before``), a later row is a new one's.
        server.replica.forget_user(pid, through=before)
        learning.ingest(server, 2_500, 1_000, seed=2)
        while learner.step():
            pass
        learner.publish()
        learning.sync(server)
        assert server.replica.holds_user(pid)


def test_a_replica_following_an_erasure_completed_elsewhere_takes_the_id_created_anew(
    learning: Any,
) -> None:
    """An erasure another process began and completed reaches this server as notices;
    once complete, the rows the learner learns of the same id created anew are served
    here (the replica kept them out for good until a restart)."""
    server = learning.server()
    learning.catalog(server)
    learning.ingest(server, 0, 1_500)
    for learner in learning.learner_here():
        while learner.step():
            pass
        learner.publish()
        learning.sync(server)
        pid = server.pseudonym("u7")
        assert server.replica.holds_user(pid)
        server.user_store.add_tombstone(pid, "erasure-elsewhere", 0)  # (by another process)
        assert server.rights.follow_erasures() == 1
        assert not server.replica.holds_user(pid)
        learner.look()  # the learner drops them, and says so
        learner.publish()
        learner.write_status()
        server.user_store.erase(pid)  # the other process completes the erasure
        assert server.rights.follow_erasures() == 1
        learning.ingest(server, 1_500, 1_000, seed=2)  # u7 again: an id created anew
        while learner.step():
            pass
        learner.publish()
        learning.sync(server)
        assert learner.models.user_vectors(pid)["ranker"] is not None
        assert server.replica.holds_user(pid)


def test_a_refresh_reaches_the_learner_and_the_served_rows(learning: Any) -> None:
    server = learning.server()
    learning.catalog(server)
    learning.ingest(server, 0, 1_500)
    for learner in learning.learner_here():
        learning.sync(server)
        pid = server.pseudonym("u5")
        assert server.replica.holds_user(pid)
        server.set_controls("u5", ControlsIn(refresh=True))
        learner.look()
        learner.step()
        learner.publish()
        learning.sync(server)
        assert learner.models.user_vectors(pid) == {"ranker": None, "retrieval": None}
        assert not server.replica.holds_user(pid)  # (the delta removed their rows)


def test_a_stop_signal_landing_inside_the_wait_does_not_hang_the_learner() -> None:
    """The handler may run while the main thread holds the event's lock (inside
    ``stop.wait``, taking it back): it must return, and the event be set after."""
    stop = threading.Event()
    handler = stop_from_a_signal(stop)

    def main_thread_inside_the_wait() -> None:
        with stop._cond:  # (what Event.wait holds as it takes its lock back)
            handler(signal.SIGTERM, None)

    inside = threading.Thread(target=main_thread_inside_the_wait, daemon=True)
    inside.start()
    inside.join(5)
    assert not inside.is_alive(), "the handler waited for the lock its own thread held"
    assert stop.wait(5)
