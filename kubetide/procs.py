"""Child processes that kubetide starts (demo, tests): started with logs to a file, stopped cleanly.

Each process gets its own process group so that stopping it also stops anything it started;
stop() sends SIGTERM, waits a grace period, then SIGKILL.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("kubetide.procs")


def kubetide_argv(*args: str) -> list[str]:
    """argv that runs a kubetide CLI command with this interpreter (no PATH lookup)."""
    return [sys.executable, "-m", "kubetide", *args]


class ManagedProcess:
    def __init__(self, name: str, argv: Sequence[str], log_path: str | Path,
                 env: dict[str, str] | None = None, cwd: str | Path | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = Path(log_path)
        self.env = env
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        logf = open(self.log_path, "ab")
        env = {**os.environ, **(self.env or {})}
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.proc = subprocess.Popen(self.argv, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=self.cwd,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        logf.close()
        log.info("started %s (pid %d), log %s", self.name, self.proc.pid, self.log_path)
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_for_file(self, path: str | Path, timeout: float) -> None:
        """Wait until this process has written ``path`` (a ready file); a clear error with the log
        tail when the process exits or the time runs out first."""
        path = Path(path)
        deadline = time.monotonic() + timeout
        while not path.exists():
            if not self.alive():
                raise RuntimeError(f"{self.name} exited (code {self.returncode()}):\n{self.tail(40)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready after {timeout:.0f}s:\n{self.tail(40)}")
            time.sleep(0.05)

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, grace_s: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.alive():
            self.signal(signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.alive():
                log.warning("%s did not stop within %.0fs of SIGTERM; killing it", self.name, grace_s)
                self.signal(signal.SIGKILL)
                self.proc.wait(5)
        # Reap anything left in its process group.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return self.proc.returncode


class ProcessGroup:
    """Start processes in order, stop them in reverse order (also on errors and Ctrl-C)."""

    def __init__(self) -> None:
        self.procs: list[ManagedProcess] = []

    def add(self, proc: ManagedProcess) -> ManagedProcess:
        self.procs.append(proc.start())
        return proc

    def dead(self) -> list[ManagedProcess]:
        return [p for p in self.procs if not p.alive()]

    def raise_if_dead(self, lines: int = 40) -> None:
        """RuntimeError naming the first process that exited, with the tail of its log."""
        dead = self.dead()
        if dead:
            raise RuntimeError(f"{dead[0].name} died:\n{dead[0].tail(lines)}")

    def tails(self, lines: int = 15) -> str:
        """The last lines of every process's log (for failure messages)."""
        return "\n".join(p.tail(lines) for p in self.procs)

    def stop(self, grace_s: float = 10.0) -> None:
        for p in reversed(self.procs):
            p.stop(grace_s)

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def add_streams_worker(group: ProcessGroup, bootstrap: str, run_dir: str | Path, *, extra: Sequence[str] = (),
                       env: dict[str, str] | None = None) -> tuple[ManagedProcess, Path]:
    """Start a ``kubetide streams`` worker logging to ``run_dir/streams.log``; returns it and its ready file
    (written once the worker has joined its consumer group: wait with ``proc.wait_for_file``)."""
    run_dir = Path(run_dir)
    ready = run_dir / "streams.ready.json"
    proc = group.add(ManagedProcess(
        "streams", kubetide_argv("streams", "--bootstrap-servers", bootstrap, "--web-port", "0", "--data-dir",
                                 str(run_dir / "streams"), "--ready-file", str(ready), *extra),
        run_dir / "streams.log", env=env))
    return proc, ready


def add_collector(group: ProcessGroup, bootstrap: str, run_dir: str | Path, kubeconfig: str | Path, *,
                  extra: Sequence[str] = (), env: dict[str, str] | None = None,
                  metrics_interval_s: float = 0.05) -> ManagedProcess:
    """Start a ``kubetide collector`` on ``kubeconfig`` scraping every ``metrics_interval_s`` (wall seconds:
    kubesim answers in virtual time), logging to ``run_dir/collector.log``."""
    return group.add(ManagedProcess(
        "collector", kubetide_argv("collector", "--bootstrap-servers", bootstrap, "--kubeconfig", str(kubeconfig),
                                   "--metrics-interval", f"{metrics_interval_s:g}", *extra),
        Path(run_dir) / "collector.log", env=env))


def add_actuator(group: ProcessGroup, bootstrap: str, run_dir: str | Path, kubeconfig: str | Path, *,
                 extra: Sequence[str] = (), env: dict[str, str] | None = None) -> ManagedProcess:
    """Start a ``kubetide actuator`` on ``kubeconfig``, logging to ``run_dir/actuator.log``."""
    return group.add(ManagedProcess(
        "actuator", kubetide_argv("actuator", "--bootstrap-servers", bootstrap, "--kubeconfig", str(kubeconfig),
                                  *extra),
        Path(run_dir) / "actuator.log", env=env))


def add_pipeline(group: ProcessGroup, bootstrap: str, run_dir: str | Path, kubeconfig: str | Path, *,
                 extra: Sequence[str] = (), env: dict[str, str] | None = None, metrics_interval_s: float = 0.05,
                 actuator: bool = True, actuator_extra: Sequence[str] = ()) -> tuple[ManagedProcess, Path]:
    """The whole pipeline on one cluster: a stream worker, a collector and (``actuator``) an actuator, each
    given ``extra`` (e.g. ``--config F``). Returns the stream worker and its ready file, as
    :func:`add_streams_worker` does: wait for it before driving the cluster."""
    streams, ready = add_streams_worker(group, bootstrap, run_dir, extra=extra, env=env)
    add_collector(group, bootstrap, run_dir, kubeconfig, extra=extra, env=env, metrics_interval_s=metrics_interval_s)
    if actuator:
        add_actuator(group, bootstrap, run_dir, kubeconfig, extra=[*extra, *actuator_extra], env=env)
    return streams, ready
