"""The latency sketch: adding values bins them as key_of says, and quantiles() gives what
quantile() gives for each q."""

from __future__ import annotations

import math
import random

from callmeter.store.sketch import Sketch, key_of, value_of


def test_add_bins_each_value_by_key_of_and_skips_bad_ones():
    rng = random.Random(7)
    for _ in range(2000):
        values = [
            rng.choice(
                [
                    0.0,
                    1e-12,
                    -1.0,
                    math.nan,
                    math.inf,
                    -math.inf,
                    rng.expovariate(1.0),
                    10 ** rng.uniform(-9, 4),
                    rng.uniform(0, 10),
                ]
            )
            for _ in range(rng.randint(0, 40))
        ]
        s = Sketch()
        s.add(values)
        bins: dict[int, int] = {}
        zeros = 0
        for v in values:
            if not (v >= 0 and v < math.inf):
                continue
            k = key_of(v)
            if k is None:
                zeros += 1
            else:
                bins[k] = bins.get(k, 0) + 1
        assert s.bins == bins and s.zeros == zeros
        qs = (0.0, 0.5, 0.95, 1.0, rng.random())
        assert s.quantiles(*qs) == [s.quantile(q) for q in qs]
        assert Sketch.from_bytes(s.to_bytes()).quantiles(*qs) == s.quantiles(*qs)


def test_quantiles_of_an_empty_sketch_and_of_zeros():
    assert Sketch().quantiles(0.5, 0.95) == [None, None]
    s = Sketch()
    s.add([0.0, 0.0, 2.0])
    assert s.quantiles(0.5, 1.0) == [0.0, value_of(key_of(2.0))]
    assert abs(s.quantiles(1.0)[0] - 2.0) <= 0.02 * 2.0
