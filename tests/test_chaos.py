"""`kubetide chaos` end to end with small settings: it runs, prints the table, and its numbers add up
(nothing lost, nothing applied twice, no PDB violated, every fuzzed input accounted for; see
docs/reliability.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.timeout(240)
def test_chaos_command_table_adds_up(tmp_path: Path) -> None:
    out_json = tmp_path / "chaos.json"
    env = {k: v for k, v in os.environ.items() if k != "KUBETIDE_BOOTSTRAP"}
    proc = subprocess.run(
        [sys.executable, "-m", "kubetide", "chaos", "--duration", "36", "--kill-every", "12", "--fuzz", "24",
         "--fuzz-every", "8", "--error-rate", "0.1", "--drop-watch-rate", "0.5", "--conflict-rate", "0.2",
         "--lost-response-rate", "0.2", "--run-dir", str(tmp_path / "run"), "--json-out", str(out_json)],
        capture_output=True, text=True, timeout=220, env=env, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    res = json.loads(out_json.read_text()) if out_json.exists() else None
    assert res is not None, out[-3000:]
    for row in ("faults injected: API", "worker kills", "inputs fuzzed", "records lost", "actions applied twice",
                "PDB violations", "recovery time p50 / max"):
        assert row in out, f"{row!r} missing from the table:\n{out[-3000:]}"
    # faults really happened: API faults of each configured kind, one kill of each worker kind
    assert res["api_faults"].get("error", 0) > 0 and res["api_faults"].get("slow", 0) > 0
    assert res["api_faults_total"] == sum(v for k, v in res["api_faults"].items() if not k.startswith("error_"))
    assert res["kills"] == {"streams": 1, "actuator": 1}, res["kills"]  # at 12 s and 24 s
    # every fuzzed input accounted for: processed + dead-lettered == produced, per topic, with reasons
    fz = res["fuzz"]
    assert fz["produced"] > 0 and fz["lost"] == 0
    for topic, t in fz["by_topic"].items():
        assert t["processed"] + t["dead_lettered"] == t["produced"], (topic, t)
    assert sum(fz["dead_letter_reasons"].values()) >= fz["dead_lettered"]
    assert set(fz["dead_letter_reasons"]) <= {"decode", "schema", "version", "too-large", "processing"}
    # the pipeline's own records: nothing lost, nothing applied twice, no PDB violated
    assert res["scrapes"]["produced"] > 100
    assert res["records_lost"] == res["scrapes"]["lost"] + fz["lost"]
    # no node scrape lost (the offset-gap guard, kubetide.faustfix: faust no longer commits over a fetch jump
    # after a rebalance; docs/reliability.md)
    assert res["scrapes"]["lost"] == 0 and not res["scrapes"]["lost_detail"], res["scrapes"]
    assert res["applied_twice"] == 0 and res["pdb_violations"] == 0
    assert res["applied_evictions"] <= res["evictions_kubesim"]  # every applied eviction happened in kubesim
    assert not res["workers_died"]
    # a recovery time for every kill, p50 <= max
    each = [e["s"] for e in res["recovery_s"]["each"]]
    assert len(each) == sum(res["kills"].values()) and all(s is not None and s > 0 for s in each), each
    assert res["recovery_s"]["p50"] <= res["recovery_s"]["max"] == pytest.approx(max(each), abs=0.01)
    assert res["records_lost"] == 0 and proc.returncode == 0, out[-3000:]
