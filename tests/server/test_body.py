"""parse_body: a body of valid lines decoded in one call gives what line by line gives."""

from __future__ import annotations

import gzip
import json

import pytest

from callmeter.records import encode, encode_lines
from callmeter.server.body import BadBody, BodyTooLarge, decode_body, parse_body
from store.factory import make_call


def test_valid_body_in_one_call_equals_line_by_line():
    recs = make_call("b-1", turns=3, labels={"tier": "gold"}) + make_call("b-2", agent=None)
    data = b"\n\n" + encode_lines(recs).replace(b"\n", b"\r\n  \n") + b"\n"
    fast = parse_body(data, json_array=False, max_records=1000)
    assert fast.records == recs and fast.rejected == []
    # one bad line: every other line still stored, the bad one named by its line number
    lines = encode_lines(recs).split(b"\n")
    nul = json.loads(lines[2])
    nul["agent_name"] = "a\u0000b"
    newer = json.loads(lines[3])
    newer["v"] = 999
    for bad, why in ((b"{nope", "JSON"), (json.dumps(nul).encode(), "NUL"),
                     (json.dumps(newer).encode(), "newer")):  # fmt: skip
        body = b"\n".join([*lines[:2], bad, *lines[3:]])
        out = parse_body(body, json_array=False, max_records=1000)
        assert [r["line"] for r in out.rejected] == [3] and why in out.rejected[0]["error"]
        assert out.records == recs[:2] + recs[3:]


def test_bodies_are_each_records_canonical_json():
    recs = make_call("c-1", turns=2, labels={"tier": "gold"})
    canonical = [encode(r) for r in recs]
    # the same records written differently: spaces, keys reordered, an unknown field,
    # defaults left out; the store keeps the canonical form of each
    lines = []
    for r in recs:
        obj = json.loads(encode(r))
        obj["extra"] = {"ignored": [1, 2, 3]}
        if obj["seq"] == 0:
            del obj["v"]
        lines.append(json.dumps(dict(reversed(obj.items())), indent=None).encode())
    body = b"\n".join(lines) + b"\n"
    fast = parse_body(body, json_array=False, max_records=1000)
    assert fast.records == recs and fast.bodies == canonical and fast.rejected == []
    as_array = parse_body(b"[" + b",".join(lines) + b"]", json_array=True, max_records=1000)
    assert as_array.records == recs and as_array.bodies == canonical
    # with a bad line the others are decoded one by one: records and bodies stay aligned
    slow = parse_body(body + b"{nope\n", json_array=False, max_records=1000)
    assert slow.records == recs and slow.bodies == canonical
    assert [r["line"] for r in slow.rejected] == [len(lines) + 1]


def test_a_nul_the_store_would_keep_is_refused_one_it_would_not_keep_is_dropped():
    (rec,) = make_call("n-1", turns=0, close=False)
    obj = json.loads(encode(rec))
    obj["unknown"] = "a\u0000b"  # not a field of the record: not stored
    out = parse_body(json.dumps(obj).encode(), json_array=False, max_records=10)
    assert out.records == [rec] and out.bodies == [encode(rec)]
    obj["labels"] = {"k": "a\u0000b"}
    for body in (json.dumps(obj).encode(), json.dumps(obj).encode() + b"\n" + encode(rec)):
        out = parse_body(body, json_array=False, max_records=10)
        assert out.rejected[0]["line"] == 1 and "NUL" in out.rejected[0]["error"]
        assert len(out.records) == len(out.bodies) == body.count(b"\n")


def test_too_many_records_in_one_body():
    recs = make_call("m-1", turns=3)  # 14 records
    with pytest.raises(BodyTooLarge):
        parse_body(encode_lines(recs), json_array=False, max_records=13)
    assert len(parse_body(encode_lines(recs), json_array=False, max_records=14).records) == 14
    # blank lines do not count
    spaced = encode_lines(recs).replace(b"\n", b"\n\n")
    assert len(parse_body(spaced, json_array=False, max_records=14).bodies) == 14


def test_decode_body_gunzips_first():
    recs = make_call("z-1", turns=1)
    data = gzip.compress(encode_lines(recs))
    out = decode_body(data, gzipped=True, max_body=1 << 20, json_array=False, max_records=100)
    assert out.records == recs
    with pytest.raises(BodyTooLarge):
        decode_body(data, gzipped=True, max_body=100, json_array=False, max_records=100)
    with pytest.raises(BadBody):
        decode_body(data[:-9], gzipped=True, max_body=1 << 20, json_array=False, max_records=9)
