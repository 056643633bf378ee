"""JSON Schema files of every kubetide topic (contract), one per topic and version.

The files ``<topic>.v<version>.json`` in this folder are generated from
:mod:`kubetide.models` by ``kubetide schemas export schemas/``; ``tests/test_schemas.py``
proves the files and the models agree, and validates sample messages against the files
with an independent JSON Schema validator.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def filename(name: str, version: int) -> str:
    return f"{name}.v{version}.json"


def generate() -> dict[str, dict[str, Any]]:
    """Schema documents for every public topic model, by file name."""
    from kubetide.models import MODELS
    from kubetide.topics import PUBLIC_TOPICS

    out: dict[str, dict[str, Any]] = {}
    for name in PUBLIC_TOPICS:
        for version, model in sorted(MODELS[name].items()):
            doc = model.model_json_schema(by_alias=True, mode="validation")
            # Pin the envelope: a file accepts exactly its own name and version.
            doc["properties"]["schema"] = {
                "type": "object", "description": "message schema name and version",
                "properties": {"name": {"const": name}, "version": {"const": version}},
                "required": ["name", "version"],
            }
            doc.setdefault("required", [])
            if "schema" not in doc["required"]:
                doc["required"].insert(0, "schema")
            doc = {"$schema": DIALECT, "$id": f"https://kubetide.dev/schemas/{filename(name, version)}",
                   **doc, "x-kubetide-topic": name, "x-kubetide-version": version}
            out[filename(name, version)] = doc
    return out


def dumps(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def export(directory: str | Path) -> list[Path]:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for fname, doc in generate().items():
        path = directory / fname
        path.write_bytes(dumps(doc))
        written.append(path)
    return written


def load(name: str, version: int = 1) -> dict[str, Any]:
    return orjson.loads((HERE / filename(name, version)).read_bytes())
