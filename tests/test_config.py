"""Settings: explicit overrides > environment > TOML file > defaults; unknown keys fail."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from fyp.config import Settings, load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fyp.toml"
    path.write_text(text)
    return path


def test_defaults_when_nothing_is_set() -> None:
    s = load_settings(environ={})
    assert s == Settings()
    assert (s.region, s.port, s.data_dir) == ("local", 8000, Path(".fyp-data"))
    assert s.feed.excluded_labels == ("removed", "ineligible", "misinformation")


def test_the_file_overrides_defaults_including_nested_sections(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'region = "br"\nport = 9000\n[feed]\ndefault_count = 7\nexcluded_labels = ["nsfw"]\n'
        "[ranker.value_weights]\nlike = 9.0\n",
    )
    s = load_settings(path, environ={})
    assert (s.region, s.port) == ("br", 9000)
    assert s.feed.default_count == 7
    assert s.feed.max_count == 50  # untouched keys keep their defaults
    assert s.feed.excluded_labels == ("nsfw",)
    assert s.ranker.value_weights == {"like": 9.0}


def test_the_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'region = "br"\nport = 9000\nhost = "0.0.0.0"\n')
    env = {"FYP_REGION": "pt", "FYP_PORT": "9100", "FYP_DATA_DIR": str(tmp_path / "d")}
    s = load_settings(path, environ=env)
    assert (s.region, s.port, s.host) == ("pt", 9100, "0.0.0.0")
    assert s.data_dir == tmp_path / "d"


def test_explicit_overrides_beat_the_environment_and_none_means_not_given(tmp_path: Path) -> None:
    env = {"FYP_REGION": "pt", "FYP_PORT": "9100"}
    s = load_settings(overrides={"region": "de", "port": None}, environ=env)
    assert (s.region, s.port) == ("de", 9100)


def test_the_config_file_may_be_named_by_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, 'region = "jp"\n')
    assert load_settings(environ={"FYP_CONFIG": str(path)}).region == "jp"
    other = tmp_path / "other.toml"
    other.write_text('region = "kr"\n')
    assert load_settings(other, environ={"FYP_CONFIG": str(path)}).region == "kr"  # flag wins


def test_settings_are_read_from_the_process_environment_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FYP_REGION", "nz")
    monkeypatch.delenv("FYP_CONFIG", raising=False)
    assert load_settings().region == "nz"


@pytest.mark.parametrize(
    "text",
    [
        'regoin = "br"\n',  # a typo at the top level
        "[feed]\ndefault_cuont = 3\n",  # a typo in a section
        "[nonsense]\nx = 1\n",  # an unknown section
    ],
)
def test_unknown_keys_in_the_file_are_rejected(tmp_path: Path, text: str) -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        load_settings(write(tmp_path, text), environ={})


def test_unknown_override_keys_are_rejected() -> None:
    with pytest.raises(ValidationError):
        load_settings(overrides={"regoin": "br"}, environ={})


@pytest.mark.parametrize(
    ("env", "field"),
    [({"FYP_PORT": "http"}, "port"), ({"FYP_PORT": "70000"}, "port")],
)
def test_bad_environment_values_are_rejected_naming_the_field(
    env: dict[str, str], field: str
) -> None:
    with pytest.raises(ValidationError, match=field):
        load_settings(environ=env)


@pytest.mark.parametrize(
    "text",
    [
        "[feed]\ndefault_count = 0\n",
        "[sources]\nbudget_ms = -1\n",
        "[ranker]\nprior_strength = 0\n",
    ],
)
def test_out_of_range_values_are_rejected(tmp_path: Path, text: str) -> None:
    with pytest.raises(ValidationError):
        load_settings(write(tmp_path, text), environ={})


def test_a_broken_file_fails_loudly(tmp_path: Path) -> None:
    with pytest.raises(ValueError):  # tomllib.TOMLDecodeError
        load_settings(write(tmp_path, "region = \n"), environ={})
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path / "missing.toml", environ={})


def test_an_unknown_label_in_value_weights_fails_when_settings_are_read(tmp_path: Path) -> None:
    """Before any store is opened (it used to fail in the ranker, leaking connections)."""
    with pytest.raises(ValidationError, match="likes"):
        load_settings(write(tmp_path, "[ranker.value_weights]\nlikes = 1.0\n"), environ={})


def test_settings_are_frozen() -> None:
    s = load_settings(environ={})
    with pytest.raises(ValidationError):
        s.region = "elsewhere"  # type: ignore[misc]
