"""Kubernetes client plumbing shared by the collector and the actuator.

- :func:`new_api_client` loads the client configuration the way kubectl does: an explicit
  ``--kubeconfig PATH``, else ``$KUBECONFIG`` (``:``-separated list, merged), else
  ``~/.kube/config``; ``--context`` picks a context; when none of those files exists and
  the process runs in a pod (``KUBERNETES_SERVICE_HOST`` set), the in-cluster service
  account is used.
- :class:`ClusterClock` keeps the cluster's clock, read from the ``Date`` header of API
  responses (:func:`cluster_now`). Workers use it, never the local wall clock, for event
  times and expiry, so the same code runs on kubesim's virtual time and on a real cluster.
- :func:`raise_for_status`, :func:`is_retryable`, :func:`backoff_delays`: error handling
  for raw (``_preload_content=False``) calls, and jittered exponential backoff.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Iterator, Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

log = logging.getLogger("kubetide.kube")

IN_CLUSTER_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


def find_kubeconfig(kubeconfig: str | None = None) -> tuple[str, bool, bool]:
    """(kubeconfig path list, whether one of its files exists, whether in-cluster config is there)."""
    path = kubeconfig or os.environ.get("KUBECONFIG") or os.path.join(os.path.expanduser("~"), ".kube", "config")
    candidates = [p for p in path.split(os.pathsep) if p]
    have_file = any(os.path.isfile(os.path.expanduser(p)) for p in candidates)
    in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and os.path.isfile(IN_CLUSTER_TOKEN)
    return path, have_file, in_cluster


async def new_api_client(kubeconfig: str | None = None, context: str | None = None) -> client.ApiClient:
    """An ApiClient configured like kubectl would be (see the module docstring)."""
    cfg = client.Configuration()
    path, have_file, in_cluster = find_kubeconfig(kubeconfig)
    if kubeconfig and not have_file:
        raise FileNotFoundError(f"kubeconfig {kubeconfig} does not exist")
    if have_file:
        await config.load_kube_config(config_file=path, context=context, client_configuration=cfg,
                                      persist_config=False)
        log.info("Kubernetes API %s (kubeconfig %s%s)", cfg.host, path,
                 f", context {context}" if context else "")
    elif in_cluster:
        config.load_incluster_config(client_configuration=cfg)
        log.info("Kubernetes API %s (in-cluster service account)", cfg.host)
    else:
        raise FileNotFoundError(
            f"no kubeconfig found ({path}) and not running in a pod; pass --kubeconfig or set KUBECONFIG")
    return client.ApiClient(configuration=cfg)


def cluster_now(headers: Mapping[str, str] | None) -> float | None:
    """The cluster time (epoch seconds) from a response's ``Date`` header, or None."""
    if not headers:
        return None
    raw = headers.get("Date") or headers.get("date")
    if not raw:
        return None
    try:
        return parsedate_to_datetime(raw).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


class ClusterClock:
    """The latest cluster time seen in any response (monotonic: never goes back)."""

    def __init__(self) -> None:
        self.latest: float | None = None

    def observe(self, headers: Mapping[str, str] | None) -> float | None:
        t = cluster_now(headers)
        if t is not None:
            self.observe_ts(t)
        return t

    def observe_ts(self, t: float | None) -> None:
        if t is not None and (self.latest is None or t > self.latest):
            self.latest = t

    async def refresh(self, api: client.ApiClient) -> float:
        """Ask the API server for its time (a cheap GET /version) and return it."""
        _, _, headers = await client.VersionApi(api).get_code_with_http_info(_request_timeout=10)
        t = cluster_now(headers)
        if t is None:
            raise RuntimeError("the API server sent no Date header")
        self.observe_ts(t)
        return t


def parse_timestamp(value: Any) -> float | None:
    """RFC 3339 (``2026-01-05T00:00:00Z``) or datetime -> epoch seconds."""
    if value is None:
        return None
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    from datetime import datetime
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class ApiStatusError(ApiException):
    """An error answer to a raw (``_preload_content=False``) call, with the parsed Status body."""

    def __init__(self, status: int, reason: str, body: str, headers: Mapping[str, str] | None) -> None:
        super().__init__(status=status, reason=reason)
        self.body = body
        self.headers = headers


async def raise_for_status(resp: aiohttp.ClientResponse) -> None:
    if 200 <= resp.status < 300:
        return
    body = await resp.text()
    resp.release()
    raise ApiStatusError(resp.status, resp.reason or "", body, resp.headers)


RETRYABLE_STATUS = frozenset({0, 408, 409, 425, 500, 502, 503, 504})


def is_retryable(exc: BaseException) -> bool:
    """Transient API trouble worth retrying: 5xx, timeouts, connection errors, throttling."""
    if isinstance(exc, ApiException):
        return exc.status in RETRYABLE_STATUS or exc.status == 429 or (exc.status or 0) >= 500
    return isinstance(exc, aiohttp.ClientError | asyncio.TimeoutError | TimeoutError | ConnectionError | OSError)


def backoff_delays(initial: float, maximum: float, *, rng: random.Random | None = None) -> Iterator[float]:
    """Endless jittered exponential backoff ("full jitter" over [d/2, d])."""
    rng = rng or random.Random()
    d = initial
    while True:
        yield rng.uniform(d / 2, d)
        d = min(maximum, d * 2)


async def call_json(fn: Any, *args: Any, clock: ClusterClock, attempts: int, backoff: tuple[float, float],
                    timeout_s: float, retry: bool = True, log_retries: logging.Logger | None = None,
                    **kw: Any) -> dict | None:
    """``fn(*args, _preload_content=False)`` (a kubernetes_asyncio API method) → the JSON body, None on 404.
    Other errors raise (:class:`ApiStatusError` for an error answer). When ``retry``, transient trouble
    (:func:`is_retryable`) is retried with jittered backoff up to ``attempts`` calls in all; a 409 conflict and a
    429 (an eviction's PDB refusal) are never retried here: the caller decides. Every answer's Date header feeds
    ``clock``. ``log_retries`` logs each retry with its reason."""
    delays = backoff_delays(*backoff)
    for i in range(1, max(1, attempts) + 1):
        try:
            resp = await fn(*args, _preload_content=False, _request_timeout=timeout_s, **kw)
            try:
                clock.observe(resp.headers)
                if resp.status == 404:
                    return None
                body = await resp.read()
                if not 200 <= resp.status < 300:
                    raise ApiStatusError(resp.status, resp.reason or "", body.decode(errors="replace"), resp.headers)
                return orjson.loads(body)
            finally:
                resp.release()
        except (ApiException, aiohttp.ClientError, TimeoutError) as exc:
            if not retry or i >= attempts or not is_retryable(exc) or getattr(exc, "status", None) in (409, 429):
                raise
            delay = next(delays)
            if log_retries is not None:
                log_retries.warning("%s failed (%s); retry %d in %.1fs", getattr(fn, "__name__", "API call"),
                                    describe(exc), i, delay)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


def describe(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason or ''}".strip()
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
