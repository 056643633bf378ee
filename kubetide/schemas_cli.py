"""`kubetide schemas`: export the JSON Schema of every topic for subscribers in any language."""

from __future__ import annotations

import argparse
import sys

import schemas
from kubetide.topics import TOPICS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    exp = sub.add_parser("export", help="write <topic>.v<N>.json files into DIR")
    exp.add_argument("directory", metavar="DIR")
    sub.add_parser("list", help="list topics, keys and schema files")
    show = sub.add_parser("show", help="print one topic's schema")
    show.add_argument("topic")
    show.add_argument("--version", type=int, default=1)


def run(args: argparse.Namespace) -> int:
    if args.action == "export":
        for path in schemas.export(args.directory):
            print(path)
        return 0
    if args.action == "list":
        for t in TOPICS:
            if not t.internal:
                print(f"{t.name:<22} key={t.key:<22} {schemas.filename(t.name, 1)}  {t.description}")
        return 0
    docs = schemas.generate()
    fname = schemas.filename(args.topic, args.version)
    if fname not in docs:
        print(f"kubetide schemas: no schema {fname}; see `kubetide schemas list`", file=sys.stderr)
        return 2
    sys.stdout.write(schemas.dumps(docs[fname]).decode())
    return 0
