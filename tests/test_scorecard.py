"""kubetide.scorecard on hand-made series: each report key's arithmetic."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kubetide import scorecard as sc


def test_spread_is_the_time_mean_of_p95_minus_p5() -> None:
    # two nodes: p95 - p5 of [a, b] with linear interpolation = 0.9 * |b - a|
    series = [[10.0, 90.0], [40.0, 60.0]]
    assert sc.spread_p95_p5(series) == pytest.approx((0.9 * 80 + 0.9 * 20) / 2)


def test_spread_ignores_absent_nodes_and_empty_ticks() -> None:
    nan = math.nan
    series = [[10.0, 90.0, nan], [nan, nan, nan], [50.0, 50.0, 50.0]]
    assert sc.spread_p95_p5(series) == pytest.approx((72.0 + 0.0) / 2)
    assert sc.spread_p95_p5(np.zeros((0, 3))) is None


def test_zone_skew_counts_absent_zones_as_zero() -> None:
    assert sc.zone_skew({"a": 3, "b": 1}, ["a", "b", "c"]) == 3
    assert sc.zone_skew({"a": 2, "b": 2, "c": 2}, ["a", "b", "c"]) == 0
    assert sc.zone_skew({}, []) == 0


def test_max_zone_skew_only_after_actions_and_at_start() -> None:
    skew = [1, 5, 2, 4, 9]
    action = [False, False, True, True, False]
    assert sc.max_zone_skew(skew, action) == 4  # tick 0 (1) and ticks 2, 3 (2, 4); not 5 or 9
    assert sc.max_zone_skew([3, 7], [False, False]) == 3
    assert sc.max_zone_skew([], []) is None


def test_repeat_eviction_of_the_replacement_within_30_minutes() -> None:
    first = sc.Eviction(0.0, "shop/Deployment/web", "shop/web-1", "n1", "shop/web-2", "n2")
    again = sc.Eviction(600.0, "shop/Deployment/web", "shop/web-2", "n2", "shop/web-3", "n3")
    assert sc.repeat_evictions([first, again]) == 1
    late = sc.Eviction(1801.0, "shop/Deployment/web", "shop/web-2", "n2")
    assert sc.repeat_evictions([first, late]) == 0


def test_repeat_eviction_from_the_node_the_replacement_went_to() -> None:
    first = sc.Eviction(0.0, "shop/Deployment/web", "shop/web-1", "n1", "shop/web-2", "n2")
    pingpong = sc.Eviction(1200.0, "shop/Deployment/web", "shop/web-7", "n2")  # another pod, undoing the move
    other_wl = sc.Eviction(1200.0, "shop/Deployment/api", "shop/api-1", "n2")
    other_node = sc.Eviction(1200.0, "shop/Deployment/web", "shop/web-8", "n4")
    assert sc.repeat_evictions([first, pingpong]) == 1
    assert sc.repeat_evictions([first, other_wl, other_node]) == 0
    # counted once even when it matches two earlier evictions; order of the input does not matter
    second = sc.Eviction(100.0, "shop/Deployment/web", "shop/web-5", "n3", "shop/web-6", "n2")
    assert sc.repeat_evictions([pingpong, second, first]) == 1


def test_underprovisioned_pod_minutes() -> None:
    demand = [[3.0, 1.0], [1.0, 1.0]]
    served = [[2.0, 1.0], [2.0, 0.5]]
    pod = [0.5, 0.25]
    # tick 0: app0 short 1 core = 2 pods; tick 1: app1 short 0.5 = 2 pods; 4 pod-ticks of 30 s = 2 min
    assert sc.underprovisioned_pod_minutes(demand, served, pod, 30.0) == pytest.approx(2.0)
    assert sc.underprovisioned_pod_minutes([], [], [], 30.0) is None


def test_hours_and_ideal_node_hours() -> None:
    assert sc.hours([3, 3, 4, 4], 900.0) == pytest.approx(3.5)
    assert sc.hours([], 10.0) is None
    # 8-core nodes: 0.5 cores → 1 node (at least one), 8 → 1, 8.1 → 2, 20 → 3; ticks of 1 h
    assert sc.ideal_node_hours([0.5, 8.0, 8.1, 20.0], 8.0, 3600.0) == pytest.approx(7.0)
    assert sc.ideal_node_hours([1.0], 0.0, 10.0) is None


def test_interference_precision_recall_top1() -> None:
    eps = [sc.Episode("n1", "web", ("batch",), 100.0, 200.0),
           sc.Episode("n2", "api", ("cruncher", "batch"), 300.0, 400.0),
           sc.Episode("n3", "db", ("noisy",), 500.0, 600.0)]
    finds = [sc.Finding(150.0, "n1", "web", ("batch", "x")),      # true, right antagonist
             sc.Finding(160.0, "n1", "web", ("x",)),              # true (same episode again)
             sc.Finding(310.0, "n2", "api", ("other", "cruncher")),  # true, wrong top-1
             sc.Finding(350.0, "n1", "web", ("batch",)),          # outside the n1 episode: false
             sc.Finding(550.0, "n3", "cache", ("noisy",))]        # wrong victim: false
    p, r, top1 = sc.interference_scores(eps, finds)
    assert p == pytest.approx(3 / 5)
    assert r == pytest.approx(2 / 3)
    assert top1 == pytest.approx(1 / 2)
    assert sc.interference_scores(eps, []) == (None, 0.0, None)
    assert sc.interference_scores([], finds) == (0.0, None, None)
    # slack widens the match window
    p2, r2, _ = sc.interference_scores(eps, [sc.Finding(205.0, "n1", "web", ("batch",))], slack_s=10.0)
    assert (p2, r2) == (1.0, pytest.approx(1 / 3))


def test_top1_accepts_any_antagonist_active_on_the_node_at_the_time() -> None:
    # two antagonists on n1; the second one's episode with the victim starts 30 s after the first one's
    eps = [sc.Episode("n1", "web", ("noisy-a",), 100.0, 400.0),
           sc.Episode("n1", "web", ("noisy-b",), 130.0, 400.0),
           sc.Episode("n2", "api", ("noisy-c",), 100.0, 400.0)]
    finds = [sc.Finding(120.0, "n1", "web", ("noisy-a",)),  # first finding of both n1 episodes: right for both
             sc.Finding(150.0, "n2", "api", ("noisy-a",))]  # names an antagonist of another node: wrong
    assert sc.interference_scores(eps, finds, slack_s=60.0)[2] == pytest.approx(2 / 3)


def test_p99_and_ratio() -> None:
    assert sc.p99([]) is None
    assert sc.p99([10.0] * 5) == 10.0
    assert sc.p99(list(range(101))) == pytest.approx(99.0)
    assert sc.ratio(1.0, 2.0) == 0.5
    assert sc.ratio(None, 2.0) is None
    assert sc.ratio(0, 0) == 1.0
    assert sc.ratio(3, 0) is None


def test_periodicity_scores() -> None:
    truth = {"a": True, "b": True, "c": True, "d": False, "e": False}
    periods = {"a": 86400.0, "b": 90000.0, "c": 3600.0, "d": None, "e": 86400.0}
    daily, none = sc.periodicity_scores(truth, periods)
    assert daily == pytest.approx(2 / 3)  # b is within 10 % of a day, c is hourly
    assert none == 0.5
    assert sc.periodicity_scores({"a": True}, {}) == (0.0, None)  # no profile = no period found
    assert sc.periodicity_scores({}, {}) == (None, None)


def test_interference_scores_equal_the_all_pairs_definition() -> None:
    """Grouping by (node, victim) gives exactly what comparing every finding with every episode does."""
    rng = np.random.default_rng(7)

    def brute(eps: list[sc.Episode], fs: list[sc.Finding], slack: float) -> tuple:
        m = sc._matches
        prec = sum(1 for f in fs if any(m(f, e, slack) for e in eps)) / len(fs) if fs else None
        if not eps:
            return prec, None, None
        matched = right = 0
        for e in eps:
            hits = sorted((f for f in fs if m(f, e, slack)), key=lambda f: f.ts)
            if hits:
                matched += 1
                true = {a for x in eps if m(hits[0], x, slack) for a in x.antagonists}
                right += bool(hits[0].antagonists and hits[0].antagonists[0] in true)
        return prec, matched / len(eps), right / matched if matched else None

    for _ in range(200):
        nodes, victims, ants = ["n1", "n2", "n3"], ["web", "api"], ["a", "b", "c"]
        eps = [sc.Episode(str(rng.choice(nodes)), str(rng.choice(victims)),
                          tuple(str(a) for a in rng.choice(ants, size=int(rng.integers(0, 3)), replace=False)),
                          t0 := float(rng.uniform(0, 100)), t0 + float(rng.uniform(0, 30)))
               for _ in range(int(rng.integers(0, 12)))]
        fs = [sc.Finding(float(rng.integers(0, 130)), str(rng.choice(nodes)), str(rng.choice(victims)),
                         tuple(str(a) for a in rng.choice(ants, size=int(rng.integers(0, 3)), replace=False)))
              for _ in range(int(rng.integers(0, 25)))]
        slack = float(rng.choice([0.0, 10.0]))
        assert sc.interference_scores(eps, fs, slack) == brute(eps, fs, slack)
