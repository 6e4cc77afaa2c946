"""The checkpoint's header: a checkpoint of another format is refused before its payload
is unpickled, one written before the header is still read, and code from before the
header finds no format it knows in a checkpoint written now."""

from __future__ import annotations

import pickle
from pathlib import Path

from fyp.storage import checkpoint as checkpoint_module
from fyp.storage.checkpoint import FORMAT, read_checkpoint, read_header, write_checkpoint

# A pickle naming a class no version of this code has: loading it fails, as loading a
# newer checkpoint's renamed classes fails in older code.
UNLOADABLE = b"\x80\x02cfyp.nowhere\nStateOfTheFuture\nq\x00)\x81q\x01."


def _newer(path: Path, fmt: int) -> None:
    with path.open("wb") as f:
        pickle.dump({checkpoint_module._HEADER_KEY: fmt}, f, protocol=2)
        f.write(UNLOADABLE)


def test_a_checkpoint_is_read_back(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pkl"
    write_checkpoint(path, {"offset": 7, "state": np_free_state()})
    assert read_checkpoint(path) == {"format": FORMAT, "offset": 7, "state": np_free_state()}
    with path.open("rb") as f:
        assert read_header(f) == FORMAT


def test_a_newer_format_is_unknown_and_its_payload_never_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pkl"
    _newer(path, FORMAT + 1)
    try:
        pickle.loads(UNLOADABLE)
        raise AssertionError("the payload was meant to fail to load")
    except (ModuleNotFoundError, AttributeError):
        pass
    assert read_checkpoint(path) is None  # no exception: the caller replays the log


def test_a_payload_naming_classes_this_code_lacks_is_unknown_too(tmp_path: Path) -> None:
    """Code that added or renamed a class without a new format (a downgrade past it): the
    header says this code's format, the payload cannot be loaded here. Replayed from the
    log as any unknown format, not a failure at every start."""
    path = tmp_path / "checkpoint.pkl"
    _newer(path, FORMAT)
    assert read_checkpoint(path) is None


def test_a_checkpoint_written_before_the_header_is_read(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pkl"
    payload = {"format": FORMAT, "offset": 3, "state": Path("an object of a class")}
    path.write_bytes(pickle.dumps(payload, protocol=5))
    assert read_checkpoint(path) == payload
    path.write_bytes(pickle.dumps({"format": FORMAT - 1, "offset": 3}, protocol=5))
    assert read_checkpoint(path) is None


def test_code_from_before_the_header_finds_an_unknown_format(tmp_path: Path) -> None:
    """What the reader of format 8 before the header did: the file's first pickle is the
    checkpoint, used when its "format" is its own. It must find none in a file written
    now, and read no further (a newer payload would fail to load there)."""
    path = tmp_path / "checkpoint.pkl"
    write_checkpoint(path, {"offset": 1})
    with path.open("rb") as f:
        data = pickle.load(f)
    assert isinstance(data, dict) and data.get("format") is None


def test_a_truncated_or_foreign_file_has_no_header(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pkl"
    for content in (b"", b"\x80\x02}q\x00(X", b"not a pickle at all", pickle.dumps([1, 2])):
        path.write_bytes(content)
        with path.open("rb") as f:
            assert read_header(f) is None


def np_free_state() -> dict[str, object]:
    return {"users": ["u1", "u2"], "counts": (1, 2.5)}
