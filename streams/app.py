"""The faust app of the stream worker: settings from :mod:`kubetide.faustfix`, agents from :mod:`streams.agents`.

Topics are not created here: ``kubetide.kafka.ensure_topics(bootstrap, kubetide.topics.TOPICS)``
creates them (with their partition counts) before workers start; the agents declare them with
the same counts. faust itself creates only the profile table's changelog
(``<app_id>-profile-state-changelog``, partitions = those of the app-samples topic).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import faust
import orjson

from kubetide import topics
from kubetide.faustfix import apply_embedded_broker_fixes, apply_offset_gap_guard, faust_settings
from streams.agents import install
from streams.core.settings import StreamsSettings

log = logging.getLogger("kubetide.streams")


def default_worker_id() -> str:
    return f"streams@{socket.gethostname()}:{os.getpid()}"


def create_app(bootstrap: str, *, embedded: bool, app_id: str = "kubetide-streams", data_dir: str = ".kubetide/streams",
               web_port: int = 0, config: StreamsSettings | Mapping[str, Any] | None = None,
               worker_id: str | None = None, ready_file: str | None = None) -> faust.App:
    """A configured faust app with the stream agents installed (not started).

    ``config`` is a :class:`StreamsSettings` or the whole kubetide config mapping (its
    ``streams:`` section is used). When the first rebalance has completed (partitions assigned,
    tables recovered) the app logs ``streams worker ready`` and writes ``ready_file`` (JSON) if given.
    """
    settings = config if isinstance(config, StreamsSettings) else StreamsSettings.from_config(config)
    worker_id = worker_id or default_worker_id()
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    app = faust.App(**faust_settings(bootstrap, embedded=embedded, app_id=app_id, data_dir=data_dir,
                                     web_port=web_port,
                                     topic_partitions=topics.spec(topics.APP_SAMPLES).partitions))
    apply_embedded_broker_fixes(app, embedded=embedded)
    apply_offset_gap_guard(app)  # faust would otherwise mark skipped offsets done (lost records after a rebalance)
    parts = install(app, settings, worker_id=worker_id)
    if embedded:  # the in-memory broker may restart empty: notice, report the loss, recreate topics, rejoin
        from kubetide.kafka import add_restart_watch

        add_restart_watch(app, bootstrap, [t.name for t in topics.TOPICS],
                          interval_s=float(os.environ.get("KUBETIDE_BROKER_CHECK_S") or 5.0))
    app.kubetide = parts  # type: ignore[attr-defined]
    t0 = time.monotonic()
    ready = {"done": False}

    @app.on_rebalance_complete.connect
    async def _ready(sender: Any, **_: Any) -> None:
        if ready["done"]:
            log.info("rebalance complete")
            return
        ready["done"] = True
        took = time.monotonic() - t0
        log.info("streams worker ready in %.1fs (worker %s, group %s)", took, worker_id, app_id)
        if ready_file:
            _write_ready(ready_file, {"pid": os.getpid(), "worker_id": worker_id, "ready_s": took,
                                      "web_port": app.conf.web_port})

    return app


def _write_ready(path: str, info: dict[str, Any]) -> None:
    tmp = Path(path + ".tmp")
    tmp.write_bytes(orjson.dumps(info))
    tmp.replace(path)
