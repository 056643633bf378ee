"""kubesim: a simulated Kubernetes API server driven by a workload model on a virtual clock.

- :mod:`kubesim.scenario` — scenario schema, ``load_scenario``, ``ScenarioError``
- :mod:`kubesim.model` — ``Cluster``: pure-Python state + ``step``/``advance`` (no HTTP): workload model,
  scheduler, controllers, baseline HPA and cluster-autoscaler, SLA/cost accounting, interference truth
- ``kubesim/scenarios/`` — shipped scenarios (demo, hotspots, diurnal, interference, az-drift, elastic,
  mixed) and their README
- :mod:`kubesim.server` — ``KubeSim``: aiohttp server speaking the Kubernetes REST subset
- :mod:`kubesim.kubeconfig` — ``write_kubeconfig``
- :mod:`kubesim.cli` — ``add_arguments`` / ``run`` for the command line
"""

from .scenario import Scenario, ScenarioError, load_scenario

__all__ = ["Scenario", "ScenarioError", "load_scenario"]
