"""The policy as configuration: validated when settings load."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from fyp.config import load_settings
from fyp.safety.labels import sensitive_topic, unknown_labels
from fyp.safety.policy import PolicyConfig, SurfacePolicy, min_age_of


def test_unknown_labels_in_the_policy_are_refused() -> None:
    with pytest.raises(ValidationError, match="unknown labels"):
        PolicyConfig(surfaces={"for_you": SurfacePolicy(exclude_labels=("misinfo",))})
    ok = PolicyConfig(
        extra_labels=("spam",), surfaces={"for_you": SurfacePolicy(exclude_labels=("spam",))}
    )
    assert ok.surfaces["for_you"].exclude_labels == ("spam",)


def test_demotion_factors_and_default_surface_are_checked() -> None:
    with pytest.raises(ValidationError, match="demote_labels"):
        SurfacePolicy(demote_labels={"graphic": 1.5})
    with pytest.raises(ValidationError, match="default_surface"):
        PolicyConfig(default_surface="home")


def test_other_surfaces_use_the_default_rules() -> None:
    p = PolicyConfig()
    assert p.surface_policy("following") == "following"
    assert p.surface_policy("tab3") == "for_you"


def test_unknown_age_is_the_youngest_band() -> None:
    assert min_age_of(None) == 13
    assert min_age_of("16-17") == 16
    assert min_age_of("18+") == 18


def test_label_vocabulary() -> None:
    assert sensitive_topic("sensitive:dieting") == "dieting"
    assert sensitive_topic("sensitive:") is None
    assert unknown_labels(["mature", "sensitive:sadness", "nsfw"]) == ["nsfw"]


def test_policy_from_a_settings_file(tmp_path: Path) -> None:
    path = tmp_path / "fyp.toml"
    path.write_text(
        "[policy]\nsensitive_max = 2\n[policy.surfaces.for_you]\nexclude_labels = ['graphic']\n"
        "[policy.surfaces.following]\nexclude_states = ['removed']\n"
    )
    s = load_settings(path, environ={})
    assert s.policy.sensitive_max == 2
    assert s.policy.surfaces["for_you"].exclude_labels == ("graphic",)
