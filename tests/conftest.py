"""Suite-wide settings. Fixtures live beside the parts they start (broker_fixtures,
kubesim_fixtures, test_actuator_support) and are imported by the tests that use them."""

from __future__ import annotations

import os

# Worker processes started by tests serve /metrics on a free port, never a fixed one.
os.environ.setdefault("KUBETIDE_METRICS_PORT", "0")
