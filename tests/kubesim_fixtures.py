"""pytest fixtures for an in-process kubesim (import them into conftest.py).

``kubesim``: a started :class:`kubesim.server.KubeSim` (demo scenario, manual clock, free port).
``kubesim_api``: a kubernetes_asyncio ``ApiClient`` configured from the kubesim kubeconfig
through ``config.load_kube_config`` (so the client runs unchanged).
``api``: the workers' own client (``workers.kube.new_api_client``) for the kubesim of the test
module's ``sim`` fixture (each module starts kubesim with the options it needs).
"""

from __future__ import annotations

import pytest_asyncio
from kubernetes_asyncio import client, config

from kubesim.server import KubeSim
from workers.kube import new_api_client


@pytest_asyncio.fixture
async def kubesim():
    async with KubeSim("demo", speed=0) as sim:
        yield sim


@pytest_asyncio.fixture
async def kubesim_api(kubesim):
    await config.load_kube_config(config_file=str(kubesim.kubeconfig_path))
    async with client.ApiClient() as api:
        yield api


@pytest_asyncio.fixture
async def api(sim):
    a = await new_api_client(str(sim.kubeconfig_path))
    try:
        yield a
    finally:
        await a.close()
