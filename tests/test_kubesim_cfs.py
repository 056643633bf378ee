"""kubesim's CPU sharing on a contended node (:func:`kubesim.model.cfs_share`): weighted max-min fairness by
request, the way CFS shares a CPU by ``cpu.shares`` (pure numpy)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubesim.model import MIN_CPU_SHARE_CORES, cfs_share


def test_within_request_keeps_what_it_wants_and_the_burster_gets_the_rest():
    got = cfs_share(np.array([1.5, 4.0]), np.array([2.0, 1.0]), np.array([0, 0]), np.array([4.0]), 1)
    assert got.tolist() == pytest.approx([1.5, 2.5])


def test_two_bursters_split_the_room_by_request():
    got = cfs_share(np.array([5.0, 5.0, 0.5]), np.array([2.0, 1.0, 1.0]), np.array([0, 0, 0]), np.array([3.5]), 1)
    # 0.5 is under its share (1/4 of 3.5); the 3.0 left splits 2:1
    assert got.tolist() == pytest.approx([2.0, 1.0, 0.5])


def test_nodes_are_independent_and_no_request_still_gets_a_minimal_weight():
    got = cfs_share(np.array([2.0, 2.0, 3.0, 3.0]), np.array([0.0, 1.0, 1.0, 1.0]), np.array([0, 0, 1, 1]),
                    np.array([2.0, 4.0]), 2)
    w = MIN_CPU_SHARE_CORES
    assert got[:2].tolist() == pytest.approx([2.0 * w / (w + 1.0), 2.0 / (w + 1.0)])
    assert got[2:].tolist() == pytest.approx([2.0, 2.0])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.floats(0, 8), st.floats(0, 4)), min_size=1, max_size=25),
       st.lists(st.floats(0.5, 16), min_size=3, max_size=3))
def test_water_filling_properties(pods, rooms):
    node = np.array([p[0] for p in pods])
    want = np.array([p[1] for p in pods])
    req = np.array([p[2] for p in pods])
    room = np.array(rooms)
    got = cfs_share(want, req, node, room, 3)
    weight = np.maximum(req, MIN_CPU_SHARE_CORES)
    assert (got <= want + 1e-9).all() and (got >= -1e-12).all()
    for n in range(3):
        on = node == n
        if not on.any():
            continue
        # work-conserving: the node gives min(room, everything wanted)
        assert got[on].sum() == pytest.approx(min(room[n], want[on].sum()), rel=1e-9, abs=1e-9)
        # nobody gets less than the smaller of its want and its weight's share of the whole room
        share = room[n] * weight[on] / weight[on].sum()
        assert (got[on] >= np.minimum(want[on], share) - 1e-9).all()
        # a pod short of its want gets at least as much per weight as any other pod
        short = on & (got < want - 1e-9)
        if short.any():
            assert (got[short] / weight[short]).min() >= (got[on] / weight[on]).max() - 1e-9
