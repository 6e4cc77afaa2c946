"""Attributes as the models read them: dense codes per name and value, on users
(``LogState.user_attribute``) and catalog rows (``CatalogIndex.attribute_column``),
the same after a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from fyp.catalog.index import CatalogIndex
from fyp.config import load_settings
from fyp.engine import Engine
from fyp.state.attribute_codes import NO_VALUE, AttributeVocabulary
from fyp.types import Video
from fyp.users.controls import ProfileIn


def test_names_and_each_names_values_get_dense_codes() -> None:
    vocab = AttributeVocabulary()
    a = vocab.encode((("activity", "high"), ("device", "tv")))
    b = vocab.encode((("activity", "low"),))
    c = vocab.encode((("activity", "high"), ("device", "phone")))
    assert vocab.value_code(a, "activity") == vocab.value_code(c, "activity") == 0
    assert vocab.value_code(b, "activity") == 1
    assert (vocab.value_code(a, "device"), vocab.value_code(c, "device")) == (0, 1)
    assert vocab.value_code(b, "device") == NO_VALUE
    assert vocab.value_code(a, "never_sent") == NO_VALUE
    assert vocab.cardinality("activity") == 2 and vocab.cardinality("never_sent") == 0
    assert vocab.value_of("device", 1) == "phone" and vocab.value_of("device", 7) is None


def test_a_value_no_one_holds_any_more_is_forgotten_and_its_code_never_reused() -> None:
    vocab = AttributeVocabulary()
    shared, rare = vocab.encode((("band", "18-24"),)), vocab.encode((("band", "rare"),))
    for codes in (shared, shared, rare):
        vocab.hold(codes)
    vocab.release(rare)
    vocab.release(shared)
    assert vocab.value_of("band", 1) is None  # "rare": its only holder left
    assert vocab.value_of("band", 0) == "18-24"  # one holder left
    again = vocab.encode((("band", "rare"),))
    assert vocab.value_code(again, "band") == 2
    assert vocab.value_code(vocab.encode((("band", "new"),)), "band") == 3
    # A name none of whose values anyone holds goes too, and comes back as a new name.
    only = vocab.encode((("made_up_by_one", "x"),))
    vocab.hold(only)
    vocab.release(only)
    assert "made_up_by_one" not in vocab.names.of
    assert vocab.cardinality("made_up_by_one") == 0
    assert vocab.value_code(only, "made_up_by_one") == NO_VALUE
    back = vocab.encode((("made_up_by_one", "x"),))
    assert back != only and vocab.value_code(back, "made_up_by_one") == 0


def test_a_catalog_column_follows_later_upserts_and_growth() -> None:
    catalog = CatalogIndex()
    catalog.upsert([Video("v0", "c", 1, attributes=(("video_type", "ad"),)), Video("v1", "c", 1)])
    column = catalog.attribute_column("video_type")
    assert list(column[:2]) == [0, NO_VALUE]
    # Past the first capacity, and a re-upload that changes the value.
    catalog.upsert(
        [Video(f"w{i}", "c", 1, attributes=(("video_type", "normal"),)) for i in range(1100)]
        + [Video("v1", "c", 1, attributes=(("video_type", "ad"),))]
    )
    column = catalog.attribute_column("video_type")
    assert column[catalog.row_of["v1"]] == 0
    assert column[catalog.row_of["w1099"]] == 1
    # A column first asked for after the rows came is filled from them.
    assert catalog.attribute_column("upload_type")[: len(catalog)].tolist() == [NO_VALUE] * 1102


@pytest.mark.parametrize("from_checkpoint", [True, False])
def test_codes_are_the_same_after_a_restart(tmp_path: Path, from_checkpoint: bool) -> None:
    settings = load_settings(overrides={"data_dir": tmp_path / "d"}, environ={})
    engine = Engine.open(settings)
    try:
        engine.put_user("ana", ProfileIn(attributes={"activity": "low"}))
        engine.put_user("bo", ProfileIn(attributes={"activity": "high", "device": "tv"}))
        engine.upsert_videos([Video("v1", "c", 1000, attributes=(("video_type", "ad"),))])
        engine.checkpoints.write()
        bo = engine.state.users[engine.pseudonym("bo")]
        before = engine.state.user_attribute(bo, "activity")
    finally:
        engine.close()
    again = Engine.open(settings, from_checkpoint=from_checkpoint)
    try:
        state = again.state
        bo = state.users[again.pseudonym("bo")]
        assert state.user_attribute(bo, "activity") == before
        assert state.user_attributes.value_of("activity", before) == "high"
        assert state.user_attribute(bo, "never_sent") == NO_VALUE
        assert again.profile_of("bo") is not None
        assert dict(again.profile_of("bo").attributes) == {"activity": "high", "device": "tv"}
        cat = again.catalog
        code = int(cat.attribute_column("video_type")[cat.row_of["v1"]])
        assert cat.attributes.value_of("video_type", code) == "ad"
    finally:
        again.close()
