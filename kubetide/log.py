"""Logging set-up shared by every kubetide command: one line per event, to stderr or a file."""

from __future__ import annotations

import logging
import os
import sys

FORMAT = "%(asctime)s %(levelname)-5s %(name)s: %(message)s"


def setup_logging(level: str | None = None, file: str | None = None) -> None:
    level = (level or os.environ.get("KUBETIDE_LOG_LEVEL") or "INFO").upper()
    handler: logging.Handler = logging.FileHandler(file) if file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT, datefmt="%Y-%m-%dT%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Quiet chatty libraries unless asked for DEBUG.
    if level != "DEBUG":
        for name in ("aiokafka", "kafka", "faust", "mode", "aiohttp.access", "kubernetes_asyncio"):
            logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
