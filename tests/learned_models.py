"""What a server serves compared with what a replay of the log learns: shared by the
learner's tests (tests/learning) and the cluster's fault tests (tests/cluster). Not a
test module."""

from __future__ import annotations

import numpy as np

from fyp.model.online import OnlineModels
from fyp.model.replica import ModelReplica


def assert_serves(replica: ModelReplica, models: OnlineModels) -> None:
    """The replica holds exactly the models' rows, fallbacks and dense weights."""
    for prefix, tables in (
        ("ranker", models.ranker.tables),
        ("retrieval", models.retrieval.tables),
    ):
        for kind, table in tables.items():
            held = replica.tables[f"{prefix}.{kind}"]
            ids = table.ids()
            assert sorted(held.ids()) == sorted(ids), f"{prefix}.{kind}"
            rows = np.array([table.row_of(i) for i in ids], dtype=np.int64)
            np.testing.assert_array_equal(
                held.vectors(held.lookup(ids, 0)), table.vectors(rows), err_msg=kind
            )
            np.testing.assert_array_equal(
                held.vectors(np.array([-1])), table.vectors(np.array([-1]))
            )
    for name, w in models.ranker.net.numpy_weights().items():
        np.testing.assert_array_equal(replica.dense[f"ranker.{name}"], w, err_msg=name)
    for name, t in models.retrieval.user_tower.state_dict().items():
        np.testing.assert_array_equal(
            replica.dense[f"retrieval.user_tower.{name}"], t.numpy(), err_msg=name
        )
    assert replica.examples == models.ranker.examples_seen
    assert replica.positives == models.retrieval.positives_seen
