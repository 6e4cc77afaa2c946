"""Every holder of the learned models limits the process's native thread pools to
``model.threads``: a BLAS pool left at its default splits serving's small products
across threads whose helpers then spin, taking the core the server needs."""

from __future__ import annotations

from pathlib import Path

import faiss
import pytest
import torch
from threadpoolctl import threadpool_info, threadpool_limits

from fyp.catalog.index import CatalogIndex
from fyp.config import load_settings
from fyp.model.online import OnlineModels
from fyp.model.replica import ModelReplica
from fyp.state.updater import LogState


def _blas_threads() -> set[int]:
    return {int(p["num_threads"]) for p in threadpool_info() if p["user_api"] == "blas"}


@pytest.mark.parametrize("holder", [ModelReplica, OnlineModels])
def test_a_models_holder_limits_the_thread_pools(
    tmp_path: Path, holder: type[ModelReplica] | type[OnlineModels]
) -> None:
    assert _blas_threads(), "numpy's BLAS is found"
    settings = load_settings(
        overrides={"data_dir": tmp_path, "model": {"enabled": True, "threads": 1}},
        environ={},
    )
    before = torch.get_num_threads(), faiss.omp_get_max_threads()
    # As if the pools were at a many-core machine's default (restored on leaving).
    with threadpool_limits(3, user_api="blas"):
        torch.set_num_threads(3)
        faiss.omp_set_num_threads(3)
        try:
            assert _blas_threads() == {3}
            catalog = CatalogIndex(settings.feed.excluded_labels, settings.policy)
            holder(settings, LogState(settings, catalog))
            assert _blas_threads() == {1}
            assert torch.get_num_threads() == 1
            assert faiss.omp_get_max_threads() == 1
        finally:
            torch.set_num_threads(before[0])
            faiss.omp_set_num_threads(before[1])
