"""A faust worker with changelog-backed tables, run as a subprocess by tests/test_table_recovery.py.

Usage: python tests/faust_table_app.py MODE STATUS_DIR
  MODE=process  count events from the source topic into two tables (count and last seq per key)
  MODE=dump     ignore new events; once table recovery is complete, write the tables to
                STATUS_DIR/tables.json

Environment: KT_BOOTSTRAP, KT_APP_ID, KT_TOPIC, KT_PARTITIONS, KT_EMBEDDED (1/0),
KT_EXPECT (process mode: write STATUS_DIR/done.json after this many events),
KUBETIDE_DISABLE_END_OFFSET_FIX=1 reproduces the broker bug.

Status files (JSON, written atomically): ready.json once the worker is assigned partitions and
recovery is complete (with seconds since process start), done.json / tables.json as above.
"""

from __future__ import annotations

import os
import sys
import time

T0 = time.monotonic()

import faust  # noqa: E402
import orjson  # noqa: E402

from kubetide.faustfix import apply_embedded_broker_fixes, faust_settings  # noqa: E402

MODE, STATUS_DIR = sys.argv[1], sys.argv[2]
BOOTSTRAP = os.environ["KT_BOOTSTRAP"]
APP_ID = os.environ["KT_APP_ID"]
TOPIC = os.environ["KT_TOPIC"]
PARTITIONS = int(os.environ.get("KT_PARTITIONS", "4"))
EMBEDDED = os.environ.get("KT_EMBEDDED", "1") == "1"
EXPECT = int(os.environ.get("KT_EXPECT", "0"))


def write_status(name: str, data: dict) -> None:
    path = os.path.join(STATUS_DIR, name)
    with open(path + ".tmp", "wb") as f:
        f.write(orjson.dumps(data))
    os.replace(path + ".tmp", path)


app = faust.App(**faust_settings(BOOTSTRAP, embedded=EMBEDDED, app_id=APP_ID,
                                 data_dir=os.path.join(STATUS_DIR, "data"), topic_partitions=PARTITIONS))
fix_installed = apply_embedded_broker_fixes(app, embedded=EMBEDDED)
source = app.topic(TOPIC, partitions=PARTITIONS, key_type=bytes, value_type=bytes,
                   key_serializer="raw", value_serializer="raw")
counts = app.Table("counts", default=int, partitions=PARTITIONS)
last = app.Table("last", default=int, partitions=PARTITIONS)
state = {"processed": 0, "ready_at": None, "done": False, "dumped": False}


@app.agent(source)
async def count(stream):
    async for key, value in stream.items():
        if MODE != "process":
            continue
        k = key.decode()
        counts[k] += 1
        last[k] = orjson.loads(value)["seq"]
        state["processed"] += 1
        if EXPECT and state["processed"] >= EXPECT and not state["done"]:
            state["done"] = True
            write_status("done.json", {"processed": state["processed"], "t": time.monotonic() - T0})


@app.timer(0.1)
async def watch() -> None:
    recovered = app.tables.recovery.completed.is_set() and not app.rebalancing
    assigned = app.consumer.assignment() if app._consumer is not None else set()
    if not (recovered and assigned):
        return
    if state["ready_at"] is None:
        state["ready_at"] = time.monotonic() - T0
        write_status("ready.json", {"ready_s": state["ready_at"], "fix_installed": fix_installed,
                                    "assigned": len(assigned)})
    if MODE == "dump" and not state["dumped"]:
        state["dumped"] = True
        write_status("tables.json", {"counts": dict(counts.items()), "last": dict(last.items()),
                                     "recovered_s": time.monotonic() - T0, "fix_installed": fix_installed})


if __name__ == "__main__":
    from faust.worker import Worker

    Worker(app, loglevel="INFO", quiet=True).execute_from_commandline()
