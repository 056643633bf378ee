"""The `kubetide` command line: one entry point, one subcommand per component.

Subcommand modules are imported only when run, so `kubetide --help` is instant and one
component's heavy imports (faust) do not slow the others. Each module exposes
``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from kubetide import __version__

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("kubetide.demo", "run the whole pipeline on the embedded broker and kubesim, print a summary table"),
    "chaos": ("kubetide.chaos", "run the pipeline under worker kills, API faults and fuzzed input; score it"),
    "broker": ("kubetide.broker", "run the embedded Kafka-protocol broker (Tansu, memory storage)"),
    "topics": ("kubetide.admin", "create or list kubetide's Kafka topics"),
    "schemas": ("kubetide.schemas_cli", "export or show the JSON Schemas of every topic (the contract)"),
    "kubesim": ("kubesim.cli", "run kubesim, the simulated Kubernetes API cluster"),
    "collector": ("workers.collector", "watch a cluster and publish cluster.events and cluster.metrics"),
    "streams": ("streams.cli", "run a stream-processing worker (profiles, planners)"),
    "actuator": ("workers.actuator", "apply decisions to the cluster safely and publish actions"),
    "hints": ("workers.hints", "placement hints: profile-type anti-affinity for opted-in namespaces (dry run "
                               "unless --apply)"),
    "forecast": ("kubetide.forecast_cli", "detect periods and forecast the columns of a CSV trace (JSON contract)"),
    "evaluate": ("kubetide.evaluate", "run a kubesim scenario with kubetide and with the baseline; score both"),
    "record": ("workers.recorder", "record Kafka topics to a file (gzip JSON Lines) for replay"),
    "replay": ("kubetide.replay", "replay a recording into a broker, or offline through streams/core"),
}

EPILOG = """\
environment:
  KUBETIDE_BOOTSTRAP   Kafka bootstrap servers (default: start the embedded broker where supported)
  KUBETIDE_CONFIG      path of the kubetide YAML config file
  KUBETIDE__A__B=v     override config key a.b (value parsed as YAML)
  KUBECONFIG           kubeconfig path, as for kubectl

Run `kubetide COMMAND --help` for a command's options.
"""


def _top_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kubetide",
        description="kubetide: Kubernetes fleet rebalancing as an event stream (Kafka + faust).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    p.add_argument("--version", action="version", version=f"kubetide {__version__}")
    p.add_argument("command", nargs="?", metavar="COMMAND",
                   help="one of: " + ", ".join(COMMANDS))
    return p


def _usage_with_commands(p: argparse.ArgumentParser) -> str:
    width = max(len(n) for n in COMMANDS)
    lines = [f"  {n.ljust(width)}  {h}" for n, (_, h) in COMMANDS.items()]
    commands = "commands:\n" + "\n".join(lines) + "\n\npositional arguments:"
    return p.format_help().replace("positional arguments:", commands)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage_with_commands(top))
        return 0 if argv else 2
    if argv[0] == "--version":
        top.parse_args(argv)
    name = argv[0]
    if name not in COMMANDS:
        top.print_usage(sys.stderr)
        print(f"kubetide: unknown command {name!r}; choose from: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"kubetide {name}", description=help_text,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        return 130
