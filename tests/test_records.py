"""callmeter.records: the one wire format, its JSON Schema and the streaming JSONL reader."""

from __future__ import annotations

import io
import json
import random
import tracemalloc
from pathlib import Path
from typing import Any

import msgspec
import pytest

from callmeter.errors import InvalidArgumentError, InvalidRecordError
from callmeter.model.types import METRIC_TYPES
from callmeter.records import (
    KINDS,
    RECORD_EVENTS,
    RECORD_TYPES,
    RECORD_VERSION,
    MetricsCollectedEvent,
    RecordReader,
    SessionStartedEvent,
    decode,
    encode,
    encode_lines,
    json_schema,
    json_schema_text,
    read_records,
)

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "docs" / "records.schema.json"
T0 = 1_790_000_000.0


def _value(t: msgspec.inspect.Type, depth: int = 0) -> Any:
    """A non-default value of every field, so a round trip exercises each one."""
    mi = msgspec.inspect
    if isinstance(t, mi.UnionType):
        return _value(next(x for x in t.types if not isinstance(x, mi.NoneType)), depth)
    if isinstance(t, mi.BoolType):
        return True
    if isinstance(t, mi.IntType):
        return 7
    if isinstance(t, mi.FloatType):
        return 1_790_000_000.5 if (t.le or 0) >= 1e11 else 1.5
    if isinstance(t, mi.StrType):
        return 'x\u00e9\u2603\n"q"'  # non-ASCII, a newline and a quote inside a line
    if isinstance(t, mi.ListType):
        return [_value(t.item_type, depth + 1)]
    if isinstance(t, mi.DictType):
        return {"k\u00e9": "v"}
    if isinstance(t, mi.StructType):
        return _filled(t.cls, depth + 1)
    raise AssertionError(f"no sample value for {t}")


def _filled(cls: type, depth: int = 0) -> Any:
    info = msgspec.inspect.type_info(cls)
    kwargs = {f.name: _value(f.type, depth) for f in info.fields}
    if "v" in kwargs:
        kwargs["v"] = RECORD_VERSION
    return cls(**kwargs)


def every_record() -> list[Any]:
    out = []
    for cls in RECORD_TYPES:
        if cls is MetricsCollectedEvent:
            for mcls in METRIC_TYPES:
                r = _filled(cls)
                out.append(msgspec.structs.replace(r, metrics=_filled(mcls)))
        else:
            out.append(_filled(cls))
    return out


RECORDS = every_record()


@pytest.mark.parametrize(
    "record", RECORDS, ids=lambda r: getattr(r, "metrics", r).__class__.__name__
)
def test_every_record_type_round_trips(record, tmp_path):
    data = encode(record)
    assert b"\n" not in data  # one record, one line
    assert decode(data) == record
    assert decode(data.decode()) == record  # str too
    doc = json.loads(data)
    assert doc["v"] == RECORD_VERSION and doc["event"] in RECORD_EVENTS
    for key in ("session_id", "seq", "created_at", "agent_name", "labels"):
        assert key in doc
    path = tmp_path / "r.jsonl"
    path.write_bytes(encode_lines([record, record]))
    assert list(read_records(path)) == [record, record]


def test_all_record_and_metric_types_are_covered():
    assert {r.__class__ for r in RECORDS} == set(RECORD_TYPES)
    kinds = {r.metrics.__class__ for r in RECORDS if isinstance(r, MetricsCollectedEvent)}
    assert kinds == set(METRIC_TYPES)


def test_committed_schema_matches_the_types():
    committed = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert committed == json_schema(), (
        'docs/records.schema.json is stale; regenerate it with: python -c "from '
        "callmeter.records import json_schema_text as t; print(t(), end='')\" "
        "> docs/records.schema.json"
    )
    assert SCHEMA_FILE.read_text(encoding="utf-8") == json_schema_text()


def test_schema_names_every_event_and_metric_type():
    text = json_schema_text()
    for event in RECORD_EVENTS:
        assert f'"{event}"' in text
    for cls in METRIC_TYPES:
        assert f'"{cls.type}"' in text
    schema = json_schema()
    assert schema["$schema"].endswith("2020-12/schema")
    started = schema["$defs"]["SessionStartedEvent"]
    assert set(started["required"]) >= {"event", "session_id", "created_at"}
    assert started["properties"]["seq"]["minimum"] == 0
    assert started["properties"]["seq"]["maximum"] == 2**63 - 1


# decoding -------------------------------------------------------------------------------

GOOD = encode(SessionStartedEvent(session_id="s", seq=3, created_at=T0))


def _err(data: bytes | str) -> InvalidRecordError:
    with pytest.raises(InvalidRecordError) as info:
        decode(data)
    assert info.value.kind in KINDS
    return info.value


def _kind(data: bytes | str) -> str:
    return _err(data).kind


def _with(**fields: Any) -> bytes:
    doc = json.loads(GOOD)
    doc.update(fields)
    return json.dumps(doc).encode()


def test_decode_tells_why_a_record_is_refused():
    assert _kind(b"{") == "malformed"
    assert _kind(b"\xff\xfe{}") == "malformed"
    assert _kind('{"event":"close","session_id":"\ud800"}') == "malformed"  # lone surrogate
    assert _kind(_with().replace(b'"s"', b'"\\ud800"')) == "malformed"  # escaped, unpaired
    assert _kind(b"[" * 100_000 + b"]" * 100_000) == "invalid"  # not an object at all
    assert _kind(b'{"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}") == "malformed"
    assert _kind(b'{"a":' * 100_000) == "malformed"
    assert _kind(_with(event="call_transferred")) == "unknown_event"
    doc = json.loads(GOOD)
    doc.update(event="metrics_collected", metrics={"type": "sentiment_metrics", "score": 1})
    err = _err(json.dumps(doc))
    assert err.kind == "unknown_metric" and err.field == "$.metrics.type"
    err = _err(_with(v=RECORD_VERSION + 1))
    assert err.kind == "unknown_version" and "upgrade" in str(err)
    assert _kind(_with(v=0)) == "invalid"
    assert _kind(_with(seq=-1)) == "invalid"
    assert _kind(_with(seq=2**63)) == "invalid"
    assert _kind(_with(seq=1.5)) == "invalid"
    assert _kind(_with(seq=None)) == "invalid"
    assert _kind(_with(created_at=-1)) == "invalid"
    assert _kind(GOOD.replace(b'"created_at":' + str(T0).encode(), b'"created_at":1e400')) == (
        "invalid"
    )
    assert _kind(_with(created_at="yesterday")) == "invalid"
    assert _kind(_with(labels={"a": 1})) == "invalid"
    assert _kind(_with(session_id=None)) == "invalid"
    assert _kind(b'{"session_id":"s","seq":0,"created_at":1}') == "invalid"  # no event tag
    for doc in (b"[]", b"null", b"1", b'"x"', b""):
        assert _kind(doc) in ("malformed", "invalid")


def test_decode_accepts_fields_of_a_newer_writer_and_whitespace():
    newer = _with(region="eu", extra={"nested": [1, 2, {"deep": None}]})
    assert decode(newer) == decode(GOOD)
    assert decode(b"  " + GOOD + b"\r\n") == decode(GOOD)
    assert decode(bytearray(GOOD)) == decode(memoryview(GOOD))


@pytest.mark.parametrize("bad", [None, 5, 1.5, ["x"], object()])
def test_decode_of_a_wrong_type_is_a_typed_error(bad):
    with pytest.raises(InvalidArgumentError, match="bytes or str"):
        decode(bad)


# the reader -----------------------------------------------------------------------------


def _read(data: bytes, **kw: Any) -> tuple[list[Any], RecordReader]:
    reader = RecordReader(io.BytesIO(data), **kw)
    return list(reader), reader


def line(seq: int) -> bytes:
    return encode(SessionStartedEvent(session_id="s", seq=seq, created_at=T0)) + b"\n"


def test_reader_tolerates_bom_crlf_and_blank_lines():
    data = b"\xef\xbb\xbf" + line(0).replace(b"\n", b"\r\n") + b"\r\n\n  \n" + line(1)
    records, reader = _read(data)
    assert [r.seq for r in records] == [0, 1]
    assert reader.stats.blank == 3 and reader.stats.skipped_total == 0
    assert reader.position == len(data)


def test_reader_skips_bad_lines_with_their_numbers_and_kinds():
    doc = json.loads(line(0))
    doc.update(event="metrics_collected", metrics={"type": "emotion_metrics"})
    data = b"".join(
        [
            line(0),
            b"not json\n",  # 2
            b"\x80\xff garbage \xfe\n",  # 3
            b'{"event":"close","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}\n",  # 4
            _with(event="hold_music") + b"\n",  # 5
            json.dumps(doc).encode() + b"\n",  # 6
            _with(seq=-5) + b"\n",  # 7
            b"\n",  # 8 (blank)
            _with(created_at=1e300) + b"\n",  # 9
            line(1),  # 10
            line(2)[:25],  # 11: a crashed writer's partial last line
        ]
    )
    records, reader = _read(data)
    assert [r.seq for r in records] == [0, 1]
    got = [(e.line, e.kind) for e in reader.errors]
    assert got == [
        (2, "malformed"),
        (3, "malformed"),
        (4, "malformed"),
        (5, "unknown_event"),
        (6, "unknown_metric"),
        (7, "invalid"),
        (9, "invalid"),
        (11, "truncated"),
    ]
    assert reader.errors[4].field == "$.metrics.type"
    assert reader.errors[5].field == "$.seq"
    s = reader.stats
    assert s.records == 2 and s.blank == 1 and s.lines == 10 and s.skipped_total == 8
    assert s.skipped == {
        "malformed": 3, "unknown_event": 1, "unknown_metric": 1, "invalid": 2, "truncated": 1,
    }  # fmt: skip


def test_a_complete_last_line_without_newline_is_a_record():
    records, reader = _read(line(0) + line(1).rstrip(b"\n"))
    assert [r.seq for r in records] == [0, 1] and reader.stats.skipped_total == 0


def test_overlong_line_is_skipped_without_holding_it_in_memory(tmp_path):
    path = tmp_path / "long.jsonl"
    with open(path, "wb") as f:
        f.write(line(0))
        f.write(b'{"event":"session_started","pad":"' + b"x" * (40 << 20) + b'"}\n')  # 40 MiB
        f.write(line(1))
    tracemalloc.start()
    try:
        reader = RecordReader(path, max_line_bytes=64 * 1024)
        records = list(reader)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [r.seq for r in records] == [0, 1]
    assert [(e.line, e.kind) for e in reader.errors] == [(2, "too_long")]
    assert peak < 8 << 20, f"peak {peak} bytes for a 40 MiB line"
    assert reader.position == reader.size == path.stat().st_size


@pytest.mark.parametrize("limit", [1, 50, len(line(0)) - 1, len(line(0))])
def test_line_limit_boundaries(limit):
    body = len(line(0)) - 1  # without the newline
    records, reader = _read(b"\xef\xbb\xbf" + line(0) + line(1), max_line_bytes=limit)
    if limit >= body:
        assert len(records) == 2
    else:
        assert records == [] and reader.stats.skipped == {"too_long": 2}


def test_bom_does_not_count_against_the_limit():
    body = len(line(0)) - 1
    records, _ = _read(b"\xef\xbb\xbf" + line(0).rstrip(b"\n"), max_line_bytes=body)
    assert len(records) == 1


def test_max_errors_caps_the_list_not_the_counts():
    records, reader = _read(b"x\n" * 50 + line(0), max_errors=3)
    assert len(records) == 1 and len(reader.errors) == 3
    assert reader.stats.skipped == {"malformed": 50}


def test_reader_arguments(tmp_path):
    with pytest.raises(InvalidArgumentError, match="cannot read"):
        list(RecordReader(tmp_path / "missing.jsonl"))
    with pytest.raises(InvalidArgumentError, match="cannot read"):
        list(RecordReader(tmp_path))  # a directory
    for bad in (0, -1, True, 1.5, None):
        with pytest.raises(InvalidArgumentError, match="max_line_bytes"):
            RecordReader(io.BytesIO(b""), max_line_bytes=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="max_errors"):
        RecordReader(io.BytesIO(b""), max_errors=-1)
    for bad in (None, 3, b"bytes"):
        with pytest.raises(InvalidArgumentError, match="path or a binary file"):
            RecordReader(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="binary mode"):
        list(RecordReader(io.StringIO(line(0).decode())))


# fuzzing --------------------------------------------------------------------------------


def _mutations(rng: random.Random, seeds: list[bytes]) -> bytes:
    s = bytearray(rng.choice(seeds))
    op = rng.randrange(9)
    if op == 0:  # flip bytes
        for _ in range(rng.randint(1, 8)):
            s[rng.randrange(len(s))] = rng.randrange(256)
    elif op == 1:  # cut
        s = s[: rng.randrange(len(s))]
    elif op == 2:  # insert random bytes
        i = rng.randrange(len(s))
        s[i:i] = rng.randbytes(rng.randint(1, 20))
    elif op == 3:  # random bytes only
        s = bytearray(rng.randbytes(rng.randint(0, 200)))
    elif op == 4:  # deep nesting somewhere
        i = rng.randrange(len(s))
        d = rng.choice([10, 1000, 60_000])
        s[i:i] = b'{"a":' * d + b"[" * d
    elif op == 5:  # swap a value for an extreme one
        doc = json.loads(rng.choice(seeds))
        key = rng.choice(list(doc))
        doc[key] = rng.choice(
            [None, -1, 2**64, -(2**64), 1e308, -1e308, "", "\ud7ff", [], {}, True, "x" * 1000]
        )
        s = bytearray(json.dumps(doc).encode())
    elif op == 6:  # numbers json cannot hold
        s = s.replace(b"1", rng.choice([b"1e999", b"NaN", b"Infinity", b"-0", b"01"]), 1)
    elif op == 7:  # odd characters
        s = s.replace(b'"', rng.choice([b"'", b"\\", b"\x00", b'"\xc3\x28']), 1)
    else:  # a nested metrics object of a random type
        doc = json.loads(seeds[1])
        doc["metrics"]["type"] = rng.choice(["llm_metrics", "x", "", "turn_metrics", "\u2603"])
        for k in list(doc["metrics"])[: rng.randint(0, 5)]:
            doc["metrics"][k] = rng.choice([-1, None, "s", 1e300, []])
        s = bytearray(json.dumps(doc).encode())
    return bytes(s)


def test_fuzzed_lines_never_raise_out_of_decode_or_reader(tmp_path):
    rng = random.Random(8)
    seeds = [encode(r) for r in RECORDS]
    seeds.insert(1, encode(next(r for r in RECORDS if isinstance(r, MetricsCollectedEvent))))
    lines = [_mutations(rng, seeds) for _ in range(4000)]
    decoded = refused = 0
    for data in lines:
        try:
            decode(data)
            decoded += 1
        except InvalidRecordError as exc:
            assert exc.kind in KINDS
            refused += 1
    assert refused > 3000 and decoded + refused == len(lines)
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    reader = RecordReader(path, max_line_bytes=100_000)
    n = sum(1 for _ in reader)
    s = reader.stats
    assert n == s.records and s.records + s.skipped_total == s.lines
    assert set(s.skipped) <= set(KINDS)
    assert s.lines + s.blank == path.read_bytes().count(b"\n")
