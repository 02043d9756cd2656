"""parse_body: a body of valid lines decoded in one call gives what line by line gives."""

from __future__ import annotations

import json

from callmeter.records import encode_lines
from callmeter.server.body import parse_body
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
