"""The clustering data formats (trainyard.trainers.clustering.data), on small files."""

# Turkish text on purpose: the dotless i is what these tests are about.
# ruff: noqa: RUF001

from __future__ import annotations

import json

import pytest

from trainyard.trainers.clustering.data import (
    DataError,
    Record,
    from_jsonl,
    records_of,
    to_jsonl,
)

TURKISH = "Kredi kartımın şifresini unuttum, İstanbul şubesine gitmem gerekir mi? ığüşöç"
ARABIC = "لقد نسيت كلمة المرور الخاصة بي، كيف يمكنني إعادة تعيينها؟"


def test_dialogue_csv_keeps_the_customer_side() -> None:
    raw = b"conversation_id,speaker,text\n1,customer,hello there\n1,agent,hi\n2,Customer,bye\n"
    assert [r.text for r in records_of("dialogue", raw, "dataFile")] == ["hello there", "bye"]


def test_dialogue_with_one_speaker_value_keeps_every_row() -> None:
    raw = b"conversation_id,speaker,text\n1,A,one\n2,A,two\n"
    assert [r.text for r in records_of("dialogue", raw, "dataFile")] == ["one", "two"]


def test_unknown_speakers_are_explained() -> None:
    raw = b"conversation_id,speaker,text\n1,A,one\n1,B,two\n"
    with pytest.raises(DataError, match="the speaker column holds a, b"):
        records_of("dialogue", raw, "dataFile")


def test_json_list_and_json_lines_and_columns_in_any_order() -> None:
    rows = [
        {"text": "a", "conversation_id": 1, "speaker": "user"},
        {"conversation_id": "2", "speaker": "user", "text": "b"},
    ]
    as_list = records_of("dialogue", json.dumps(rows).encode(), "dataFile")
    as_lines = records_of("dialogue", "\n".join(json.dumps(r) for r in rows).encode(), "dataFile")
    assert [r.text for r in as_list] == [r.text for r in as_lines] == ["a", "b"]


def test_intent_data_in_each_format() -> None:
    csv_ = b"text,intent\nreset my password,password\n"
    as_json = json.dumps([{"text": "reset my password", "intent": "password"}]).encode()
    expected = [Record("reset my password", "password", "intent")]
    assert records_of("intent", csv_, "f") == records_of("intent", as_json, "f") == expected


@pytest.mark.parametrize(
    ("schema", "raw", "says"),
    [
        ("intent", b"text,intent,extra\na,b,c\n", "exactly the columns text,intent"),
        ("intent", b'[{"text": "a"}]', "exactly the keys text,intent"),
        ("dialogue", b'{"conversation_id": 1, "text": "x", "who": "u"}\n', "speaker,text"),
        ("intent", b"text,intent\na,\n", "intent is empty"),
        ("intent", b"[1, 2]", "must be an object"),
        ("intent", b"", "is empty"),
        ("intent", b"text,intent\n\xff\xfe,x\n", "not UTF-8"),
        ("intent", b'[[[[[["deep"]]]]]]', "nested too deeply"),
    ],
)
def test_bad_files_say_what_to_fix(schema: str, raw: bytes, says: str) -> None:
    with pytest.raises(DataError, match=says.replace("(", r"\(")):
        records_of(schema, raw, "dataFile")


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
def test_turkish_and_arabic_round_trip_exactly(bom: bytes) -> None:
    raw = (
        bom
        + (
            "conversation_id,speaker,text\n"
            f'1,müşteri,"{TURKISH}"\n'
            "1,temsilci,Yardımcı olayım\n"
            f'2,عميل,"{ARABIC}"\n'
        ).encode()
    )
    records = records_of("dialogue", raw, "dataFile")
    assert [r.text for r in records] == [TURKISH, ARABIC]
    assert from_jsonl(to_jsonl(records)) == records
    assert TURKISH.encode() in to_jsonl(records)  # stored as UTF-8, not \\u escapes
