"""`kubetide topics`: create kubetide's topics (partitions, compaction) or list them."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from kubetide.topics import TOPICS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    for name, text in (("create", "create every kubetide topic that is missing (existing ones are kept)"),
                       ("list", "list kubetide's topics; with --bootstrap-servers, say which exist")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--bootstrap-servers", default=os.environ.get("KUBETIDE_BOOTSTRAP"),
                       help="Kafka bootstrap servers (default $KUBETIDE_BOOTSTRAP)")
        p.add_argument("--include-internal", action="store_true", default=(name == "create"),
                       help="include kubetide's internal repartition topics")


def run(args: argparse.Namespace) -> int:
    specs = [t for t in TOPICS if args.include_internal or not t.internal]
    if args.action == "create":
        if not args.bootstrap_servers:
            print("kubetide topics create: give --bootstrap-servers or set KUBETIDE_BOOTSTRAP", file=sys.stderr)
            return 2
        from kubetide.kafka import ensure_topics

        asyncio.run(ensure_topics(args.bootstrap_servers, specs))
        for t in specs:
            print(f"ok  {t.name}  partitions={t.partitions}  {t.configs or ''}")
        return 0
    present: set[str] | None = None
    if args.bootstrap_servers:
        from kubetide.kafka import topics_present

        present = asyncio.run(topics_present(args.bootstrap_servers, [t.name for t in specs]))
    for t in specs:
        state = "" if present is None else ("present  " if t.name in present else "MISSING  ")
        print(f"{state}{t.name:<34} key={t.key:<22} partitions={t.partitions:<3} {t.description}")
    return 0
