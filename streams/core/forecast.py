"""Period detection and forecasting of usage series (pure numpy, deterministic, event time only).

A series is a 1-D array sampled at a fixed ``interval_s``; a missing sample is ``NaN`` (never 0).

**Period detection** (:func:`detect_periods`) follows the DSP idea of Crane's EHPA predictor
(periodogram candidates, verified by autocorrelation) but accepts *any* period the data supports,
not only a day or a week:

1. detrend (least squares line over the present samples); gaps are linearly interpolated for the
   FFT only;
2. the periodogram's local maxima with at least ``min_cycles`` cycles in the history are the
   candidates (strongest first);
3. each candidate is high-passed by a moving mean of its own length (removing slower components)
   and refined to the autocorrelation peak in its frequency bin (gap-aware ACF: only pairs where
   both samples are present count). It must be a *hill* of the ACF (rejects harmonics);
4. its confidence is the adjusted R² of the phase means at that lag (the share of the remaining
   variance the repeating profile explains, corrected for the number of cycles so noise scores ~0).
   A multiple of an accepted shorter period is scored only on what that shorter profile leaves
   (a pure day is not also a "week").
Periods within 3 % of a calendar period (1 min … 1 week) snap to it.

**Forecasting** (:func:`forecast`): ``method="auto"`` backtests every candidate on the history
(holding out the last period, or ``min(horizon, n/4)`` samples when not periodic), picks the one
with the lowest WAPE, refits on the whole history and reports that backtest error:

- ``seasonal`` / ``seasonal-log``: per period (shortest first), a profile averaged over the last
  ``k_cycles`` cycles with recency weights, each cycle de-meaned (so level shifts don't leak into
  the shape), subtracted before the next period (multi-period composition, e.g. daily + hourly
  spikes); then an exponentially weighted *level* of the deseasonalised series (level adjustment).
  ``-log`` works on ``log1p`` values (multiplicative seasonality);
- ``ses``: exponentially weighted level (the fallback when not periodic);
- the baselines :func:`seasonal_naive` (repeat the last day) and :func:`fft_filter` (Crane-DSP-like:
  keep the top-k frequency components of the history and extrapolate periodically).

:func:`window_max` is the prediction-window maximum (EHPA ``predictionWindowSeconds``) plus margin.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

DAY_S = 86400.0
CALENDAR_PERIODS_S = (60.0, 120.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 3600.0, 7200.0, 10800.0, 14400.0,
                      21600.0, 28800.0, 43200.0, 86400.0, 604800.0)
METHODS = ("auto", "seasonal", "seasonal-log", "blend", "ses", "last", "seasonal_naive", "fft_filter")


@dataclass(frozen=True)
class Period:
    period_s: float
    confidence: float


@dataclass(frozen=True)
class Forecast:
    """A forecast of ``len(values)`` samples after the last sample of the history."""

    values: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    method: str
    periods: tuple[Period, ...] = ()
    confidence: float = 0.0
    backtest_error: float | None = None
    backtest: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------- helpers

def _as_series(series: Sequence[float] | np.ndarray) -> np.ndarray:
    x = np.array(series, dtype=float).ravel()
    x[~np.isfinite(x)] = np.nan
    return x


def _interp_gaps(x: np.ndarray) -> np.ndarray:
    """Linear interpolation over NaN gaps (edges hold the nearest value); for FFT use only."""
    valid = ~np.isnan(x)
    if valid.all() or not valid.any():
        return x.copy()
    idx = np.arange(len(x))
    return np.interp(idx, idx[valid], x[valid])


def _detrend(x: np.ndarray) -> np.ndarray:
    valid = ~np.isnan(x)
    if valid.sum() < 3:
        return x - np.nanmean(x)
    t = np.flatnonzero(valid).astype(float)
    slope, icpt = np.polyfit(t, x[valid], 1)
    return x - (slope * np.arange(len(x)) + icpt)


def _moving_mean(x: np.ndarray, w: int) -> np.ndarray:
    """Centred NaN-aware moving mean over ``w`` samples (partial windows at the edges)."""
    n = len(x)
    w = max(1, min(int(w), n))
    valid = ~np.isnan(x)
    cs = np.concatenate(([0.0], np.cumsum(np.where(valid, x, 0.0))))
    cc = np.concatenate(([0], np.cumsum(valid)))
    lo = np.clip(np.arange(n) - w // 2, 0, n)
    hi = np.clip(lo + w, 0, n)
    cnt = cc[hi] - cc[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, (cs[hi] - cs[lo]) / np.maximum(cnt, 1), np.nan)


def _acf(x: np.ndarray, max_lag: int) -> np.ndarray:
    """Gap-aware autocorrelation: at each lag only pairs with both samples present count."""
    n = len(x)
    max_lag = min(max_lag, n - 1)
    valid = ~np.isnan(x)
    if valid.sum() < 3:
        return np.full(max_lag + 1, np.nan)
    z = np.where(valid, x - np.nanmean(x), 0.0)
    m = valid.astype(float)
    var = float(np.sum(z * z) / m.sum())
    if var <= 0:
        return np.full(max_lag + 1, np.nan)
    nfft = 1 << (2 * n - 1).bit_length()
    fz, fm = np.fft.rfft(z, nfft), np.fft.rfft(m, nfft)
    num = np.fft.irfft(fz * np.conj(fz), nfft)[: max_lag + 1]
    cnt = np.rint(np.fft.irfft(fm * np.conj(fm), nfft)[: max_lag + 1])
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(cnt >= 8, num / np.maximum(cnt, 1) / var, np.nan)
    return out


def _phase_profile(x: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
    valid = ~np.isnan(x)
    phase = np.arange(len(x)) % p
    sums = np.bincount(phase[valid], x[valid], minlength=p)
    cnts = np.bincount(phase[valid], minlength=p).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(cnts > 0, sums / np.maximum(cnts, 1), np.nan)
    return means, cnts


def _strength(x: np.ndarray, p: int) -> tuple[float, bool]:
    """Adjusted R² of the phase means at lag ``p`` (the share of variance a repeating profile
    explains) and whether it is significant.

    Significance compares R² with its null distribution (Beta((g-1)/2, (N-g)/2)) using effective
    degrees of freedom scaled by the residual's lag-1 autocorrelation ρ (factor (1-ρ)/(1+ρ)), so a
    smooth wander (random walk, AR noise) that folds well by chance is not taken for a period.
    """
    valid = ~np.isnan(x)
    n_obs = int(valid.sum())
    means, cnts = _phase_profile(x, p)
    groups = int((cnts > 0).sum())
    if n_obs <= groups + 1 or groups < 2:
        return 0.0, False
    xv = x[valid]
    ss_tot = float(np.sum((xv - xv.mean()) ** 2))
    if ss_tot <= 0:
        return 0.0, False
    resid = np.full(len(x), np.nan)
    resid[valid] = xv - means[(np.arange(len(x)) % p)[valid]]
    ss_res = float(np.nansum(resid ** 2))
    r2 = 1.0 - ss_res / ss_tot
    adj = float(min(1.0, max(0.0, 1.0 - (1.0 - r2) * (n_obs - 1) / (n_obs - groups))))
    if r2 >= 0.9:
        # The profile explains nearly everything: the residual is too small for its
        # autocorrelation to mean anything (a clean periodic signal would otherwise fail).
        return adj, True
    pairs = valid[1:] & valid[:-1]
    rho = 0.0
    if pairs.sum() > 2 and ss_res > 0:
        rho = float(np.sum(resid[1:][pairs] * resid[:-1][pairs]) / ss_res)
    f = min(1.0, max(1.0 / groups, (1.0 - rho) / (1.0 + rho) if rho < 1 else 0.0))
    g_eff, n_eff = max(2.0, groups * f), max(3.0, n_obs * f)
    if n_eff <= g_eff:
        return adj, False
    a, b = (g_eff - 1) / 2, (n_eff - g_eff) / 2
    mean = a / (a + b)
    sd = math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    return adj, r2 > mean + 4 * sd


def _remove_profile(x: np.ndarray, p: int) -> np.ndarray:
    means, _ = _phase_profile(x, p)
    means = np.nan_to_num(means - np.nanmean(means))
    return x - means[np.arange(len(x)) % p]


def _fold_share(x: np.ndarray, big: int, small: int) -> float:
    """How much of the ``big``-period profile of ``x`` its folding onto ``small`` explains (0..1)."""
    prof, _ = _phase_profile(x, big)
    prof = np.nan_to_num(prof - np.nanmean(prof))
    tot = float(np.sum(prof ** 2))
    if tot <= 0:
        return 0.0
    folded, _ = _phase_profile(prof, small)
    resid = prof - np.nan_to_num(folded)[np.arange(big) % small]
    return max(0.0, 1.0 - float(np.sum(resid ** 2)) / tot)


def _snap(lag: int, interval_s: float, hp: np.ndarray, max_lag: int, tol: float = 0.1) -> int:
    """Snap ``lag`` to a calendar period within ``tol`` whose profile explains (almost) as much.

    With few cycles the autocorrelation hill is flat and its top wanders; a calendar period that
    the data supports as well is the better estimate.
    """
    best = None
    for c in CALENDAR_PERIODS_S:
        samples = c / interval_s
        if samples < 2 or abs(samples - round(samples)) > 1e-6 or round(samples) > max_lag:
            continue
        if abs(lag * interval_s - c) <= tol * c:
            best = round(samples)
    if best is None or best == lag:
        return lag
    if abs(best - lag) <= 0.03 * best:
        return best
    here, _ = _strength(hp, lag)
    there, _ = _strength(hp, best)
    return best if there >= here - 0.05 else lag


# ---------------------------------------------------------------- period detection

def detect_periods(series: Sequence[float] | np.ndarray, interval_s: float, *, max_periods: int = 3,
                   min_confidence: float = 0.3, min_cycles: float = 2.0, max_candidates: int = 10) -> list[Period]:
    """The periods the history supports, most confident first ([] for noise or non-periodic data).

    ``series`` is sampled every ``interval_s`` seconds, NaN = missing. A period needs at least
    ``min_cycles`` cycles in the history and a confidence (adjusted R² of its profile, in [0, 1])
    of at least ``min_confidence``.
    """
    if interval_s <= 0:
        raise ValueError("interval_s: must be > 0")
    x = _as_series(series)
    n = len(x)
    valid = ~np.isnan(x)
    if n < 8 or valid.sum() < max(8, 0.5 * n) or float(np.nanstd(x)) <= 1e-12 * max(1.0, abs(float(np.nanmean(x)))):
        return []
    xd = _detrend(x)
    xf = _interp_gaps(xd)
    power = np.abs(np.fft.rfft(xf - xf.mean())) ** 2
    max_lag = int(n / min_cycles)
    ks = np.arange(len(power))
    ok = (ks >= max(1, math.ceil(min_cycles))) & (ks <= n / 2.0)
    ok &= n / np.maximum(ks, 1) >= 2.0
    local = np.zeros(len(power), dtype=bool)
    local[1:-1] = (power[1:-1] >= power[:-2]) & (power[1:-1] >= power[2:])
    if len(power) > 1:
        local[-1] = power[-1] >= power[-2]
    cand = ks[ok & local]
    cand = cand[np.argsort(-power[cand], kind="stable")][:max_candidates]
    accepted: list[tuple[int, float]] = []
    for k in cand:
        k = int(k)
        lo = max(2, math.floor(n / (k + 1)))
        hi = min(max_lag, math.ceil(n / (k - 1)) if k > 1 else max_lag)
        if hi < lo:
            continue
        hp = xd - _moving_mean(xd, round(n / k))
        ac = _acf(hp, hi + 1)
        seg = ac[lo: hi + 1]
        if np.all(np.isnan(seg)):
            continue
        lag = lo + int(np.nanargmax(seg))
        left = ac[lag - 1] if lag - 1 >= 0 else -np.inf
        right = ac[lag + 1] if lag + 1 < len(ac) else -np.inf
        if not (ac[lag] > 0.05 and ac[lag] >= np.nan_to_num(left, nan=-np.inf)
                and ac[lag] >= np.nan_to_num(right, nan=-np.inf)):
            continue
        lag = _snap(lag, interval_s, hp, max_lag)
        if lag > max_lag or lag < 2:
            continue
        if any(abs(lag - a) <= 0.05 * a for a, _ in accepted):
            continue
        base = xd - _moving_mean(xd, lag)
        for a, _ in sorted(accepted):
            m = lag / a
            if m >= 1.5 and abs(m - round(m)) <= 0.03 * m:
                base = _remove_profile(base, a)
        conf, significant = _strength(base, lag)
        if significant and conf >= min_confidence:
            accepted.append((lag, conf))
    # a divisor p of an accepted longer period P must explain P's profile (else it is a harmonic)
    kept = []
    for lag, conf in accepted:
        multiples = [a for a, _ in accepted
                     if a != lag and a / lag >= 1.5 and abs(a / lag - round(a / lag)) <= 0.03 * a / lag]
        if multiples and _fold_share(xd - _moving_mean(xd, lag), min(multiples), lag) < 0.5:
            continue
        kept.append((lag, conf))
    accepted = sorted(kept, key=lambda t: (-t[1], t[0]))
    return [Period(period_s=float(lag * interval_s), confidence=round(conf, 4)) for lag, conf in accepted[:max_periods]]


# ---------------------------------------------------------------- models

def _ewm_level(x: np.ndarray, halflife: float) -> float:
    """Exponentially weighted mean of the present samples, the newest weighing most."""
    valid = ~np.isnan(x)
    if not valid.any():
        return float("nan")
    span = int(min(len(x), max(8.0, 10 * halflife)))
    tail, v = x[-span:], valid[-span:]
    age = np.arange(span)[::-1].astype(float)
    w = np.where(v, 0.5 ** (age / max(halflife, 1e-9)), 0.0)
    if w.sum() <= 0:
        return float(x[valid][-1])
    return float(np.sum(np.where(v, tail, 0.0) * w) / w.sum())


def _seasonal(x: np.ndarray, periods: Sequence[int], horizon: int, *, k_cycles: int = 4, decay: float = 0.7,
              halflife: float = 12.0) -> np.ndarray:
    """Multi-period seasonal profile + level (see the module doc). Recency weights are per
    *longest* cycle (``decay`` per ``max(periods)`` of age), so a short period averages every one
    of its cycles within the last ``k_cycles`` longest cycles."""
    r, total = _seasonal_profile(x, periods, horizon, k_cycles=k_cycles, decay=decay)
    return _ewm_level(r, halflife) + total


def _seasonal_profile(x: np.ndarray, periods: Sequence[int], horizon: int, *, k_cycles: int = 4,
                      decay: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_seasonal` before its level: (the history less its profiles, the profiles over the horizon).
    The level's ``halflife`` is not used here, so candidates differing only in it share this part."""
    n = len(x)
    r = x.copy()
    fut = np.arange(n, n + horizon)
    total = np.zeros(horizon)
    big = max(periods) if periods else 1
    for p in sorted(set(periods)):
        cycles = min(n // p, max(1, (k_cycles * big) // p))
        if cycles < 1:
            continue
        block = r[n - cycles * p:].reshape(cycles, p)
        valid = ~np.isnan(block)
        cnt = valid.sum(axis=1)
        rows = cnt >= max(2, p // 4)
        if not rows.any():
            continue
        with np.errstate(invalid="ignore"):
            means = np.where(cnt > 0, np.nansum(block, axis=1) / np.maximum(cnt, 1), 0.0)
        age = (cycles - np.arange(cycles)) * p  # samples from the row's start to the end of history
        w = np.where(rows, decay ** ((age - p) / big), 0.0)[:, None] * valid
        dev = np.where(valid, block - means[:, None], 0.0)
        num, den = (w * dev).sum(axis=0), w.sum(axis=0)
        prof = np.where(den > 0, num / np.maximum(den, 1e-12), np.nan)
        if np.isnan(prof).all():
            continue
        if np.isnan(prof).any():  # phases never seen: interpolate circularly
            idx = np.arange(p)
            good = ~np.isnan(prof)
            prof = np.interp(idx, idx[good], prof[good], period=p)
        prof = prof - prof.mean()
        # columns are phases (n - cycles*p + c) mod p: rotate to absolute phase t mod p
        phase_prof = np.empty(p)
        phase_prof[(n - cycles * p + np.arange(p)) % p] = prof
        r = r - phase_prof[np.arange(n) % p]
        total += phase_prof[fut % p]
    return r, total


def seasonal_naive(series: Sequence[float] | np.ndarray, interval_s: float, horizon: int, *,
                   season_s: float = DAY_S) -> np.ndarray:
    """Baseline: repeat the last ``season_s`` (a day) of history; gaps are interpolated first."""
    x = _interp_gaps(_as_series(series))
    n = len(x)
    if n == 0 or np.isnan(x).all():
        return np.full(horizon, np.nan)
    p = max(1, min(n, round(season_s / interval_s)))
    last = x[n - p:]
    return last[np.arange(horizon) % p].copy()


def fft_filter(series: Sequence[float] | np.ndarray, interval_s: float, horizon: int, *, top_k: int = 10,
               period_s: float | None = None, level_halflife: float | None = None) -> np.ndarray:
    """Baseline in the spirit of Crane's DSP predictor: keep the mean and the ``top_k`` strongest
    frequency components of the history (the last whole number of ``period_s`` cycles when given,
    else the whole history; gaps interpolated) and extrapolate the filtered signal periodically.

    ``level_halflife`` (kubetide's variant, not the baseline) shifts the result by the recent
    weighted mean of the history's residual against the filtered fit (level adjustment)."""
    x = _interp_gaps(_as_series(series))
    n = len(x)
    if n == 0 or np.isnan(x).all():
        return np.full(horizon, np.nan)
    if period_s:
        p = round(period_s / interval_s)
        if 1 <= p <= n:
            x = x[n - (n // p) * p:]
    m = len(x)
    spec = np.fft.rfft(x)
    amp = np.abs(spec)
    amp[0] = np.inf  # always keep the mean
    keep = np.argsort(-amp, kind="stable")[: top_k + 1]
    filt = np.zeros_like(spec)
    filt[keep] = spec[keep]
    y = np.fft.irfft(filt, m)
    out = y[(m + np.arange(horizon)) % m]
    if level_halflife:
        raw = _as_series(series)[len(series) - m:]
        out = out + np.nan_to_num(_ewm_level(raw - y, level_halflife))
    return out


def _wape(actual: np.ndarray, pred: np.ndarray) -> float:
    v = ~np.isnan(actual) & ~np.isnan(pred)
    if not v.any():
        return float("nan")
    denom = float(np.sum(np.abs(actual[v])))
    err = float(np.sum(np.abs(actual[v] - pred[v])))
    if denom <= 0:
        return 0.0 if err == 0 else float("inf")
    return err / denom


def wape(actual: Sequence[float] | np.ndarray, pred: Sequence[float] | np.ndarray) -> float:
    """Weighted absolute percentage error Σ|a-f| / Σ|a| over samples present in both (a fraction)."""
    return _wape(_as_series(actual), _as_series(pred))


def mape(actual: Sequence[float] | np.ndarray, pred: Sequence[float] | np.ndarray) -> float:
    """Mean absolute percentage error over samples present in both with a non-zero actual (a fraction)."""
    a, f = _as_series(actual), _as_series(pred)
    v = ~np.isnan(a) & ~np.isnan(f) & (np.abs(a) > 1e-12)
    if not v.any():
        return float("nan")
    return float(np.mean(np.abs(a[v] - f[v]) / np.abs(a[v])))


Predictor = Callable[[np.ndarray, int], np.ndarray]


def _candidates(x: np.ndarray, interval_s: float, lags: list[int], method: str) -> dict[str, Predictor]:
    n = len(x)
    nonneg = bool(np.nanmin(x) >= 0) if (~np.isnan(x)).any() else False
    out: dict[str, Predictor] = {}
    # The seasonal candidates differ in the level's half-life and the profile's decay: the profile is computed
    # once per (series, horizon, decay, log) and each half-life only adds its level (see _seasonal).
    profiles: dict[tuple[int, int, float, bool], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def seasonal(t: np.ndarray, h: int, hl: float, dec: float, log: bool = False) -> np.ndarray:
        key = (id(t), h, dec, log)
        hit = profiles.get(key)
        if hit is None or hit[0] is not t:  # (the series is kept in the entry: its id is not reused meanwhile)
            src = np.log1p(np.maximum(t, 0)) if log else t
            hit = profiles[key] = (t, *_seasonal_profile(src, lags, h, decay=dec))
        return _ewm_level(hit[1], hl) + hit[2]

    if lags:
        big = max(lags)
        for hl_frac in (1 / 48, 1 / 8, 1 / 2):
            for dec in (0.5, 0.85):
                hl = max(1.0, big * hl_frac)
                key = f"h={hl:g},d={dec:g}"
                out[f"seasonal:{key}"] = lambda t, h, hl=hl, dec=dec: seasonal(t, h, hl, dec)
                if nonneg:
                    out[f"seasonal-log:{key}"] = (lambda t, h, hl=hl, dec=dec: np.expm1(seasonal(t, h, hl, dec, True)))
    for hl in (1.0, 4.0, 16.0):
        out[f"ses:h={hl:g}"] = lambda t, h, hl=hl: np.full(h, _ewm_level(t, hl))
    out["last"] = lambda t, h: np.full(h, _ewm_level(t, 1e-6))
    day = round(DAY_S / interval_s)
    if n >= 2 * day:
        out["seasonal_naive"] = lambda t, h: seasonal_naive(t, interval_s, h)
    main_period = max(lags) * interval_s if lags else None
    explicit = {
        "seasonal_naive": lambda t, h: seasonal_naive(t, interval_s, h),
        "fft_filter": lambda t, h: fft_filter(t, interval_s, h, period_s=main_period),
    }
    if lags:  # an even blend of the seasonal profile and the smooth spectral fit (both level-adjusted)
        big = max(lags)
        for hl_frac in (1 / 48, 1 / 8):
            hl = max(1.0, big * hl_frac)
            out[f"blend:h={hl:g}"] = lambda t, h, hl=hl: 0.5 * (
                seasonal(t, h, hl, 0.85)
                + fft_filter(t, interval_s, h, period_s=main_period, level_halflife=hl))
    if method != "auto":
        out.update(explicit)
    if method == "auto":
        return out
    return {k: v for k, v in out.items() if k.split(":")[0] == method}


def forecast(series: Sequence[float] | np.ndarray, interval_s: float, horizon: int, *, method: str = "auto",
             periods: Sequence[Period] | None = None, season_hint_s: float | None = None) -> Forecast:
    """Forecast ``horizon`` samples after the history (see the module doc for the methods).

    ``periods`` skips detection; ``season_hint_s`` is used as the period when the history is too
    short to detect one (at least one whole cycle, fewer than two).
    """
    if interval_s <= 0:
        raise ValueError("interval_s: must be > 0")
    if horizon < 0:
        raise ValueError("horizon: must be >= 0")
    if method not in METHODS:
        raise ValueError(f"method: {method!r} is not one of {', '.join(METHODS)}")
    x = _as_series(series)
    n = len(x)
    if n == 0 or np.isnan(x).all():
        nan = np.full(horizon, np.nan)
        return Forecast(nan, nan.copy(), nan.copy(), "none")
    found = list(periods) if periods is not None else detect_periods(x, interval_s)
    lags = sorted({round(p.period_s / interval_s) for p in found if 2 <= p.period_s / interval_s <= n})
    if not lags and season_hint_s and n >= season_hint_s / interval_s >= 2:
        lags = [round(season_hint_s / interval_s)]
    cands = _candidates(x, interval_s, lags, method)
    if not cands:
        raise ValueError(f"method: {method!r} needs a periodic history")
    # backtest: hold out the last period (or min(horizon, n/4) when not periodic)
    hold = max(lags) if lags and n - max(lags) >= max(lags) else max(1, min(max(horizon, 1), n // 4))
    train, test = x[: n - hold], x[n - hold:]
    scores: dict[str, float] = {}
    preds: dict[str, np.ndarray] = {}
    if len(train) >= 2 and (~np.isnan(train)).any():
        for name, fn in cands.items():
            try:
                pr = fn(train, hold)
            except (ValueError, FloatingPointError):
                continue
            preds[name] = pr
            scores[name] = _wape(test, pr)
    ranked = sorted((s if np.isfinite(s) else np.inf, i, name) for i, (name, s) in enumerate(scores.items()))
    best = ranked[0][2] if ranked else next(iter(cands))
    values = np.asarray(cands[best](x, horizon), dtype=float)
    err = scores.get(best)
    if best in preds:
        resid = test - preds[best]
        resid = resid[~np.isnan(resid)]
    else:
        resid = np.array([])
    if len(resid) >= 4:
        q_lo, q_hi = np.quantile(resid, [0.1, 0.9])
    else:
        spread = float(np.nanstd(x)) if (~np.isnan(x)).sum() > 1 else 0.0
        q_lo, q_hi = -1.28 * spread, 1.28 * spread
    lower, upper = values + min(q_lo, 0.0), values + max(q_hi, 0.0)
    if (~np.isnan(x)).any() and np.nanmin(x) >= 0:
        values, lower, upper = np.maximum(values, 0), np.maximum(lower, 0), np.maximum(upper, 0)
    used = tuple(p for p in found if round(p.period_s / interval_s) in lags)
    conf = max((p.confidence for p in used), default=0.0)
    return Forecast(values=values, lower=lower, upper=upper, method=best.split(":")[0], periods=used,
                    confidence=conf, backtest_error=None if err is None or not np.isfinite(err) else float(err),
                    backtest={k.split(":")[0]: v for k, v in sorted(scores.items(), key=lambda kv: -kv[1])
                              if np.isfinite(v)})


def window_max(values: Sequence[float] | np.ndarray, interval_s: float, window_s: float = 1800.0, *,
               margin: float = 0.0) -> float:
    """The maximum forecast over the prediction window (the first ``window_s`` seconds) × (1 + margin)."""
    if interval_s <= 0:
        raise ValueError("interval_s: must be > 0")
    v = _as_series(values)
    k = max(1, math.ceil(window_s / interval_s - 1e-9))
    head = v[:k]
    head = head[~np.isnan(head)]
    if len(head) == 0:
        return float("nan")
    return float(head.max()) * (1.0 + margin)
