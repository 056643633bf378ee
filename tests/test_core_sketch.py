"""The quantile sketch: rank error within its proven bound (and ≤ 1 %), merge, memory, bytes (pure)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from streams.core.sketch import QuantileSketch, rank_interval

QS = (0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 1.0)


def assert_within_bound(sk: QuantileSketch, data: np.ndarray, qs: tuple[float, ...] = QS,
                        others: tuple[QuantileSketch, ...] = ()) -> float:
    """Every returned value's rank is within err / n of q (the proven bound); returns the worst error."""
    n = data.shape[-1]
    err = (sk.err + sum(o.err for o in others)) / n
    est = sk.quantiles(qs, others)
    worst = 0.0
    for r in range(data.shape[0]):
        for j, q in enumerate(qs):
            lo, hi = rank_interval(data[r], est[r, j])
            target = q * (n - 1) / n
            miss = max(lo - target, target - hi, 0.0)
            assert miss <= err + 1e-12, (r, q, est[r, j], lo, hi, err)
            assert est[r, j] in data[r]
            worst = max(worst, miss)
    return worst


values = hst.one_of(
    hst.lists(hst.floats(min_value=0, max_value=1e12, allow_nan=False), min_size=1, max_size=3000),
    hst.lists(hst.sampled_from([0.0, 0.5, 1.0, 1e9]), min_size=1, max_size=3000),  # heavy ties
    hst.builds(lambda v, k: [v] * k, hst.floats(min_value=0, max_value=1e6), hst.integers(1, 3000)),  # constant
)


@settings(max_examples=80, deadline=None)
@given(values, hst.sampled_from([8, 16, 64]), hst.integers(1, 97))
def test_rank_error_within_proven_bound_small_k(vals: list[float], k: int, chunk: int) -> None:
    data = np.asarray(vals, dtype=np.float64)[None, :]
    sk = QuantileSketch(1, k)
    for i in range(0, data.shape[1], chunk):
        sk.update(data[:, i:i + chunk])
    assert sk.n == data.shape[1]
    assert sk.vmin[0] == data.min() and sk.vmax[0] == data.max()
    assert_within_bound(sk, data)
    assert sk.stored() <= k * (int(np.log2(max(sk.n / k, 1))) + 2)


@settings(max_examples=25, deadline=None)
@given(hst.sampled_from(["lognormal", "pareto", "cauchy", "zeros", "constant", "mostly-zero", "uniform"]),
       hst.integers(0, 2**32 - 1), hst.integers(20_000, 200_000))
def test_default_k_is_within_one_percent(dist: str, seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    data = {"lognormal": lambda: rng.lognormal(0, 2, n), "pareto": lambda: rng.pareto(0.8, n),
            "cauchy": lambda: np.abs(rng.standard_cauchy(n)), "zeros": lambda: np.zeros(n),
            "constant": lambda: np.full(n, 3.25), "uniform": lambda: rng.uniform(0, 1, n),
            "mostly-zero": lambda: np.where(rng.uniform(size=n) < 0.95, 0.0, rng.exponential(5, n))}[dist]()
    data = np.stack([data, rng.permutation(data)])
    sk = QuantileSketch(2)
    for i in range(0, n, 100):
        sk.update(data[:, i:i + 100])
    assert sk.rank_error_bound() <= 0.01
    assert assert_within_bound(sk, data) <= 0.01


@settings(max_examples=40, deadline=None)
@given(hst.lists(hst.lists(hst.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=0, max_size=600),
                 min_size=1, max_size=6), hst.sampled_from([8, 32]))
def test_merge_and_read_merged_keep_the_bound(parts: list[list[float]], k: int) -> None:
    sks = []
    for p in parts:
        sk = QuantileSketch(1, k)
        sk.update(np.asarray(p, dtype=np.float64))
        sks.append(sk)
    data = np.concatenate([np.asarray(p, dtype=np.float64) for p in parts])[None, :]
    if data.size == 0:
        assert QuantileSketch(1, k).quantiles((0.5,)).tolist() == [[0.0]]
        return
    nonempty = [s for s in sks if s.n]
    assert_within_bound(nonempty[0], data, others=tuple(nonempty[1:]))  # read merged on the fly
    merged = QuantileSketch(1, k)
    for s in sks:
        merged.merge(s)
    assert merged.n == data.size
    assert_within_bound(merged, data)


def test_exact_below_k_and_bytes_roundtrip() -> None:
    rng = np.random.default_rng(0)
    data = rng.lognormal(0, 1, (2, 1000))
    sk = QuantileSketch(2)
    sk.update(data)
    assert sk.err == 0
    qs = (0.5, 0.9, 0.99)
    np.testing.assert_array_equal(sk.quantiles(qs), np.percentile(data, [50, 90, 99], axis=1, method="lower").T)
    big = QuantileSketch(2, 64)
    for _ in range(50):
        big.update(rng.lognormal(0, 1, (2, 37)))
    for s in (sk, big, QuantileSketch(3, 8)):
        raw = s.to_bytes()
        again = QuantileSketch.from_bytes(raw)
        assert again.to_bytes() == raw and (again.n, again.err, again.stored()) == (s.n, s.err, s.stored())
        if s.n:
            np.testing.assert_array_equal(again.quantiles(qs), s.quantiles(qs))
        again.update(np.ones((s.rows, 100)))  # a restored sketch keeps working
        s.update(np.ones((s.rows, 100)))
        assert again.to_bytes() == s.to_bytes()


def test_memory_grows_only_logarithmically() -> None:
    sk = QuantileSketch(1, 256)
    rng = np.random.default_rng(1)
    sizes = []
    for _ in range(8):
        sk.update(rng.uniform(size=250_000))
        sizes.append(sk.stored())
    assert sk.n == 2_000_000 and max(sizes) <= 256 * (int(np.log2(2_000_000 / 256)) + 2)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="k"):
        QuantileSketch(1, 7)
    with pytest.raises(ValueError, match="same rows"):
        QuantileSketch(1, 8).merge(QuantileSketch(2, 8))
    raw = bytearray(QuantileSketch(1, 8).to_bytes())
    raw[0] = 9
    with pytest.raises(ValueError, match="version"):
        QuantileSketch.from_bytes(bytes(raw))
