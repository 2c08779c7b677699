"""The one set of naming rules (floodlight/ids.py) and the dead-letter vocabulary (schemas/errors.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from floodlight import ids
from schemas.errors import DeadLetterClass, FloodlightError, Stage

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("value", ["demo", "ipl-2024-mi-vs-csk", "a", "0", "a" * 100])
def test_good_stream_ids(value: str) -> None:
    assert ids.is_stream_id(value)
    assert ids.check_stream_id(value) == value


@pytest.mark.parametrize("value", ["", "Demo", "-demo", "de_mo", "de.mo", "de/mo", "..", "a" * 101, "démo", "demo\n",
                                   None, 7, "%70rem"])
def test_bad_stream_ids(value: object) -> None:
    assert not ids.is_stream_id(value)
    with pytest.raises(ids.InvalidId, match="invalid stream id"):
        ids.check_stream_id(value)


@pytest.mark.parametrize("value", ["1080p", "720p", "audio", "hd_1", "x-y"])
def test_good_renditions(value: str) -> None:
    assert ids.is_rendition(value)


@pytest.mark.parametrize("value", ["1080P", "HD", "", "_x", "a.b", "a/b", "a" * 33, None])
def test_uppercase_and_odd_renditions_are_refused_everywhere(value: object) -> None:
    assert not ids.is_rendition(value)
    with pytest.raises(ids.InvalidId):
        ids.check_rendition(value)


def test_audio_is_not_a_rung() -> None:
    assert ids.is_rendition("audio") and not ids.is_rung_name("audio")
    with pytest.raises(ids.InvalidId, match="reserved"):
        ids.check_rung_name("audio")
    assert ids.check_rung_name("240p") == "240p"


def test_token_and_ingest_ids() -> None:
    assert ids.is_token_id("Kx_9-a") and not ids.is_token_id("a.b") and not ids.is_token_id("x" * 65)
    assert ids.check_ingest_id("backup") == "backup"
    with pytest.raises(ids.InvalidId):
        ids.check_ingest_id("Primary")


def test_invalid_id_is_ours_and_a_value_error() -> None:
    assert issubclass(ids.InvalidId, FloodlightError) and issubclass(ids.InvalidId, ValueError)


def test_patterns_are_anchored_strings_for_pydantic() -> None:
    for pattern in (ids.STREAM_ID_PATTERN, ids.RENDITION_PATTERN, ids.TOKEN_ID_PATTERN, ids.INGEST_ID_PATTERN):
        assert pattern.startswith("^") and pattern.endswith("$")
        re.compile(pattern)


def _doc_values(field: str) -> set[str]:
    schema = json.loads((Path(__file__).parents[2] / "schemas" / "DeadLetter.avsc").read_text())
    doc = next(f["doc"] for f in schema["fields"] if f["name"] == field)
    listed = doc.split("one of:")[1].split("(")[0]
    return {v.strip(" .") for v in listed.split(",")}


def test_dead_letter_classes_match_the_schema_doc() -> None:
    assert _doc_values("error_class") == {c.value for c in DeadLetterClass}
    assert _doc_values("stage") == {s.value for s in Stage}
