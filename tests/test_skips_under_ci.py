"""The one helper for tests that need what a developer's machine may lack (the KuaiRand
data, root, a browser): a skip here, a failure under CI, which has all of it.

Mutation it catches: a fixture that calls ``pytest.skip`` whatever the environment
(the eval, end-to-end and disk-fault tests did): CI then reports green for tests that
never ran."""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn

import pytest


def test_unavailable_skips_on_a_developers_machine(
    unavailable: Callable[[str], NoReturn], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no data here"):
        unavailable("no data here")
    monkeypatch.setenv("CI", "")  # set but empty: not CI
    with pytest.raises(pytest.skip.Exception):
        unavailable("no data here")


def test_unavailable_fails_under_ci(
    unavailable: Callable[[str], NoReturn], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no data here"):
        unavailable("no data here")
