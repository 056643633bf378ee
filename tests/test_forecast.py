"""Period detection, forecasting and the `kubetide forecast` CLI (pure, fast)."""

from __future__ import annotations

import argparse
import io
import json
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubetide import forecast_cli
from streams.core.forecast import (
    Period,
    detect_periods,
    fft_filter,
    forecast,
    mape,
    seasonal_naive,
    wape,
    window_max,
)

IV = 300.0
DAY = 288


def _t(days: float) -> np.ndarray:
    return np.arange(int(days * DAY)) * IV


def _diurnal(t: np.ndarray) -> np.ndarray:
    return 10 + 5 * np.sin(2 * np.pi * t / 86400)


def _periods_h(series, iv=IV):
    return [round(p.period_s / 3600, 3) for p in detect_periods(series, iv)]


def test_daily_period():
    rng = np.random.default_rng(1)
    x = _diurnal(_t(6)) + rng.normal(0, 0.5, 6 * DAY)
    ps = detect_periods(x, IV)
    assert ps and ps[0].period_s == 86400 and 0.5 < ps[0].confidence <= 1


def test_hourly_and_half_hourly_periods():
    rng = np.random.default_rng(2)
    t = _t(3)
    assert _periods_h(10 + 3 * np.sin(2 * np.pi * t / 3600) + rng.normal(0, 0.5, len(t))) == [1.0]
    assert _periods_h(10 + 3 * np.sin(2 * np.pi * t / 1800) + rng.normal(0, 0.5, len(t))) == [0.5]


def test_mixed_daily_with_hourly_spikes():
    rng = np.random.default_rng(3)
    t = _t(5)
    x = _diurnal(t) + 4 * ((t % 3600) < 600) + rng.normal(0, 0.5, len(t))
    assert sorted(_periods_h(x)) == [1.0, 24.0]


def test_weekly_period_with_weekend_dip():
    rng = np.random.default_rng(4)
    t = np.arange(21 * DAY) * IV
    x = _diurnal(t) * (1 - 0.4 * (((t // 86400) % 7) >= 5)) + rng.normal(0, 0.5, len(t))
    assert sorted(_periods_h(x)) == [24.0, 168.0]


def test_arbitrary_period_is_accepted():
    rng = np.random.default_rng(5)
    t = np.arange(3000) * 60.0
    x = 5 + 2 * np.sin(2 * np.pi * t / (37 * 60)) + rng.normal(0, 0.3, len(t))  # a 37-minute cycle
    ps = detect_periods(x, 60.0)
    assert ps and abs(ps[0].period_s - 37 * 60) <= 60


@pytest.mark.parametrize("seed", range(5))
def test_noise_and_random_walks_have_no_period(seed):
    rng = np.random.default_rng(100 + seed)
    n = 6 * DAY
    assert detect_periods(rng.normal(10, 1, n), IV) == []
    ar = np.zeros(n)
    for i in range(1, n):
        ar[i] = 0.95 * ar[i - 1] + rng.normal()
    assert detect_periods(ar + 10, IV) == []


def test_constant_short_and_empty_series():
    assert detect_periods(np.full(1000, 3.0), IV) == []
    assert detect_periods([1.0, 2.0, 3.0], IV) == []
    assert detect_periods(np.full(500, np.nan), IV) == []
    with pytest.raises(ValueError):
        detect_periods([1.0] * 20, 0)


def test_gaps_are_not_zero():
    rng = np.random.default_rng(6)
    t = _t(5)
    x = _diurnal(t) + 4 * ((t % 3600) < 600) + rng.normal(0, 0.5, len(t))
    x[300:400] = np.nan  # an 8-hour outage
    x[rng.random(len(x)) < 0.1] = np.nan  # and scattered missing samples
    assert sorted(_periods_h(x)) == [1.0, 24.0]
    f = forecast(x, IV, DAY)
    assert not np.isnan(f.values).any()
    assert f.values.min() > 3  # a missing sample taken as 0 would drag the forecast down


def test_window_max():
    v = np.array([1.0, 5.0, 2.0, 9.0, np.nan, 3.0])
    assert window_max(v, 300, 900) == 5.0  # the first three samples
    assert window_max(v, 300, 1200) == 9.0
    assert window_max(v, 300, 600, margin=0.1) == pytest.approx(5.5)
    assert window_max(v, 300, 1) == 1.0  # at least one sample
    assert np.isnan(window_max([np.nan], 300, 1800))


def test_forecast_beats_seasonal_naive_with_level_shift():
    rng = np.random.default_rng(7)
    t = _t(8)
    x = 40 * (1 + 0.5 * np.sin(2 * np.pi * t / 86400)) * (1 + rng.normal(0, 0.08, len(t)))
    x[-int(1.5 * DAY):] *= 1.3  # traffic rose 30 % a day and a half ago
    train, test = x[:-DAY], x[-DAY:]
    ours = forecast(train, IV, DAY)
    naive = seasonal_naive(train, IV, DAY)
    assert ours.periods and ours.periods[0].period_s == 86400
    assert wape(test, ours.values) < wape(test, naive)
    assert mape(test, ours.values) < 0.15
    assert ours.backtest_error is not None and 0 <= ours.backtest_error < 0.3
    assert (ours.lower <= ours.values).all() and (ours.values <= ours.upper).all()


def test_forecast_fallback_when_not_periodic():
    rng = np.random.default_rng(8)
    x = 20 + rng.normal(0, 1, 2000)
    f = forecast(x, 60.0, 30)
    assert f.periods == () and f.method in ("ses", "last", "fft_filter")
    assert abs(float(np.mean(f.values)) - 20) < 1.5
    assert len(f.values) == 30


def test_forecast_deterministic_and_methods():
    x = _diurnal(_t(3)) + np.random.default_rng(9).normal(0, 0.3, 3 * DAY)
    a, b = forecast(x, IV, 50), forecast(x, IV, 50)
    assert np.array_equal(a.values, b.values) and a.method == b.method
    for m in ("seasonal", "seasonal-log", "ses", "last", "seasonal_naive", "fft_filter"):
        assert len(forecast(x, IV, 10, method=m).values) == 10
    with pytest.raises(ValueError):
        forecast(x, IV, 10, method="magic")


def test_baselines():
    x = np.arange(2 * DAY, dtype=float)
    assert np.array_equal(seasonal_naive(x, IV, 3), x[DAY:DAY + 3])
    y = _diurnal(_t(3))
    assert np.allclose(fft_filter(y, IV, DAY, period_s=86400), y[:DAY], atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.one_of(st.floats(0, 1e6), st.just(float("nan"))), min_size=0, max_size=400),
       st.integers(0, 50))
def test_forecast_never_crashes(values, horizon):
    f = forecast(values, 60.0, horizon)
    assert len(f.values) == horizon
    for p in detect_periods(values, 60.0):
        assert isinstance(p, Period) and 0 <= p.confidence <= 1


# ---------------------------------------------------------------- CLI

def _cli(argv: list[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    forecast_cli.add_arguments(parser)
    args = parser.parse_args(argv)
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = forecast_cli.run(args)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def csv_file(tmp_path):
    t = _t(4)
    cpu = _diurnal(t) + np.random.default_rng(10).normal(0, 0.2, len(t))
    qps = 100 + 0 * t
    p = tmp_path / "usage.csv"
    lines = ["ts,cpu,qps,host"] + [f"{a:.0f},{b:.4f},{c:.1f},h1" for a, b, c in zip(t, cpu, qps, strict=True)]
    lines[50] = lines[50].replace(",h1", ",h1").split(",")[0] + ",," + "100.0,h1"  # a missing cpu sample
    p.write_text("\n".join(lines) + "\n")
    return p


def test_cli_json(csv_file):
    code, out, _ = _cli(["--csv", str(csv_file), "--interval-s", "300", "--columns", "cpu,qps",
                         "--train-rows", str(3 * DAY), "--horizon-rows", "12", "--json"])
    assert code == 0
    doc = json.loads(out)
    assert doc["train_rows"] == 3 * DAY and doc["horizon_rows"] == 12 and doc["interval_s"] == 300
    cpu = doc["columns"]["cpu"]
    assert [p["period_s"] for p in cpu["periods"]] == [86400.0]
    assert len(cpu["forecast"]) == 12 and isinstance(cpu["method"], str)
    assert cpu["backtest_error"] < 0.1
    assert doc["columns"]["qps"]["periods"] == [] and doc["columns"]["qps"]["forecast"][0] == pytest.approx(100)


def test_cli_table(csv_file):
    code, out, _ = _cli(["--csv", str(csv_file), "--interval-s", "300", "--columns", "cpu",
                         "--train-rows", "900", "--horizon-rows", "6"])
    assert code == 0 and "cpu" in out and "1 d" in out


@pytest.mark.parametrize("argv, message", [
    (["--csv", "/nonexistent.csv"], "does not exist"),
    (["--columns", "nope"], "unknown column"),
    (["--columns", "host"], "not a number"),
    (["--train-rows", "99999"], "more than"),
])
def test_cli_errors(csv_file, argv, message):
    base = {"--csv": str(csv_file), "--interval-s": "300", "--train-rows": "100", "--horizon-rows": "5"}
    for k, v in zip(argv[::2], argv[1::2], strict=True):
        base[k] = v
    code, out, err = _cli([x for kv in base.items() for x in kv] + ["--json"])
    assert code == 2 and message in err and out == ""


def test_noiseless_periodic_series_has_its_period() -> None:
    """A clean signal must not fail the significance test (its residual is ~0)."""
    t = np.arange(3 * 288)
    for amp_noise in (0.0, 0.01):
        x = 100 + 50 * np.sin(2 * np.pi * t / 288) + amp_noise * np.random.default_rng(0).standard_normal(len(t))
        found = detect_periods(x, 300)
        assert found and found[0].period_s == 86400.0
