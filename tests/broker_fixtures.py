"""Broker fixtures for kubetide's tests. Import them into conftest.py:

    from tests.broker_fixtures import broker, broker_bootstrap  # noqa: F401

``broker`` (session scope) is the embedded broker (Tansu) on a free port, stopped at the end
of the session, or, if ``KUBETIDE_BOOTSTRAP`` is set, that external Kafka cluster instead.
It yields a :class:`BrokerHandle`: ``.bootstrap``, ``.embedded``, ``.log_file``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kubetide.broker import EmbeddedBroker


@dataclass(frozen=True)
class BrokerHandle:
    bootstrap: str
    embedded: bool
    log_file: Path | None = None
    process: EmbeddedBroker | None = None

    def unique(self, prefix: str) -> str:
        """A topic or group name no other test uses (tests share one broker)."""
        return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerHandle]:
    external = os.environ.get("KUBETIDE_BOOTSTRAP")
    if external:
        yield BrokerHandle(bootstrap=external, embedded=False)
        return
    log_file = tmp_path_factory.mktemp("broker") / "broker.log"
    b = EmbeddedBroker(log_file=log_file)
    b.start()
    try:
        yield BrokerHandle(bootstrap=b.bootstrap, embedded=True, log_file=log_file, process=b)
    finally:
        b.stop()


@pytest.fixture(scope="session")
def broker_bootstrap(broker: BrokerHandle) -> str:
    return broker.bootstrap
