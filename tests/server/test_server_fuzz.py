"""Malformed ingest bodies and queries, thousands of them: never a 500."""

from __future__ import annotations

import gzip
import json
import random
import threading
from urllib.parse import quote

from callmeter.records import encode_lines
from store.factory import make_call

from .conftest import INGEST_A, READ_A, Client

VALUES = [None, -1, 1e309, "x", [], {}, True, 2**70, -(2**70), "\udcff", "\x00", 1.5, "NaN"]


def mutate(rng: random.Random, obj):
    if isinstance(obj, dict) and obj:
        obj = dict(obj)
        k = rng.choice(list(obj))
        choice = rng.random()
        if choice < 0.4:
            obj[k] = rng.choice(VALUES)
        elif choice < 0.6:
            del obj[k]
        elif choice < 0.8:
            obj[k] = mutate(rng, obj[k])
        else:
            obj[rng.choice(["extra", "v", "seq", "event"])] = rng.choice(VALUES)
        return obj
    if isinstance(obj, list) and obj:
        obj = list(obj)
        i = rng.randrange(len(obj))
        obj[i] = mutate(rng, obj[i])
        return obj
    return rng.choice(VALUES)


def bodies(rng: random.Random, n: int):
    base = [json.loads(x) for x in encode_lines(make_call("fuzz", turns=2)).splitlines()]
    for i in range(n):
        kind = i % 8
        headers = {"Content-Type": "application/x-ndjson"}
        if kind == 0:
            data = rng.randbytes(rng.randrange(1, 300))
        elif kind == 1:
            line = json.dumps(rng.choice(base)).encode()
            data = line[: rng.randrange(1, len(line))]
        elif kind == 2:
            depth = rng.choice([10, 1000, 100_000])
            data = b"[" * depth + b"]" * (depth if rng.random() < 0.5 else 0)
            headers["Content-Type"] = rng.choice(["application/json", "application/x-ndjson"])
        elif kind == 3:
            recs = [mutate(rng, rng.choice(base)) for _ in range(rng.randrange(1, 5))]
            data = b"\n".join(json.dumps(r, allow_nan=True).encode("utf-8", "surrogatepass")
                              for r in recs)  # fmt: skip
        elif kind == 4:
            data = rng.randbytes(rng.randrange(0, 64))
            headers["Content-Encoding"] = "gzip"
        elif kind == 5:
            recs = [mutate(rng, rng.choice(base)) for _ in range(3)]
            data = gzip.compress(json.dumps(recs).encode("utf-8", "surrogatepass"))
            headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
        elif kind == 6:
            data = rng.choice([b"", b"\n\n", b"null", b"[]", b"[1,2]", b'"x"', b"\xff\xfe\x00",
                               b"{}" * 50, b"[{}]", b'{"event":"close"}'])  # fmt: skip
            headers["Content-Type"] = rng.choice(["application/json", "text/plain", ""])
        else:
            rec = dict(rng.choice(base))
            rec["session_id"] = rng.choice(["", "a" * 5000, "\u0000", "fuzz-ok"])
            rec["seq"] = rng.choice([0, -1, 2**63, 2**64, 1.5, "1"])
            data = json.dumps(rec).encode()
        yield data, headers


def test_fuzzed_bodies_never_500(server):
    rng = random.Random(1234)
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    cases = list(bodies(rng, 3000))

    def worker(part) -> None:
        c = Client(server.url, INGEST_A)
        for data, headers in part:
            r = c.request("POST", "/v1/records", data, headers)
            with lock:
                statuses[r.status] = statuses.get(r.status, 0) + 1
            assert r.status < 500, (r.status, data[:200], headers, r.body[:500])
            if r.status in (200, 400):
                out = r.json()
                assert set(out) == {"accepted", "duplicates", "rejected"}
                assert all(x["line"] >= 1 for x in out["rejected"])
        c.close()

    threads = [threading.Thread(target=worker, args=(cases[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(statuses.values()) == 3000, statuses
    assert statuses.get(400, 0) > 1000 and statuses.get(200, 0) > 10


def test_fuzzed_queries_never_500(client):
    rng = random.Random(99)
    junk = ["", "x", "-1", "1e999", "nan", "%00", "\u00e9", "a:b", ":", "2025-13-45T00:00:00Z",
            "99999999999999999999", "true", "0"]  # fmt: skip
    names = ["agent", "label", "since", "until", "min_cost", "min_e2e_p95", "has_errors",
             "sort", "order", "limit", "cursor"]  # fmt: skip
    for _ in range(600):
        params = {rng.choice(names): rng.choice(junk) for _ in range(rng.randrange(1, 4))}
        r = client.get("/v1/calls", token=READ_A, **params)
        assert r.status in (200, 400), (params, r.status, r.body[:300])
    for sid in ["%00", "a" * 3000, "..%2F..", "\u00e9"]:
        assert client.get(f"/v1/calls/{quote(sid)}", token=READ_A).status in (404, 200)
