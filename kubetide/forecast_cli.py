"""`kubetide forecast`: detect periods and forecast the columns of a CSV file (contract).

    kubetide forecast --csv usage.csv --interval-s 300 --columns cpu,mem --train-rows 2016 --horizon-rows 288 --json

The file has a header row and one row per sample, ``--interval-s`` apart. Only the first
``--train-rows`` rows are learnt from; ``--horizon-rows`` values are forecast after them. An empty
cell, ``nan`` or ``NA`` is a missing sample. With ``--json`` the output is::

    {"columns": {NAME: {"periods": [{"period_s": .., "confidence": ..}], "method": "...",
                        "forecast": [... horizon values ...], "backtest_error": ..}},
     "train_rows": N, "horizon_rows": M, "interval_s": S}

Exit status 2 for a missing file, an unknown column, non-numeric data or more train rows than rows.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

import numpy as np
import orjson

from streams.core.forecast import METHODS, forecast

_MISSING = {"", "nan", "NaN", "NA", "N/A", "null", "None"}


class InputError(Exception):
    pass


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--csv", required=True, metavar="FILE", help="CSV file with a header row")
    parser.add_argument("--interval-s", required=True, type=float, help="seconds between rows")
    parser.add_argument("--columns", default=None, help="comma-separated columns to forecast (default: all)")
    parser.add_argument("--train-rows", required=True, type=int, help="learn from the first N rows only")
    parser.add_argument("--horizon-rows", required=True, type=int, help="forecast this many rows after them")
    parser.add_argument("--method", default="auto", choices=METHODS, help="forecasting method (default: auto)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _read(path: str, columns: list[str] | None, train_rows: int) -> tuple[dict[str, np.ndarray], int]:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"file {path} does not exist")
    with p.open(newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise InputError(f"file {path} is empty") from None
        rows = [r for r in reader if any(c.strip() for c in r)]
    wanted = columns if columns else header
    for c in wanted:
        if c not in header:
            raise InputError(f"unknown column {c!r} (columns: {', '.join(header)})")
    if train_rows > len(rows):
        raise InputError(f"--train-rows {train_rows} is more than the {len(rows)} data rows in {path}")
    out: dict[str, np.ndarray] = {}
    for c in wanted:
        j = header.index(c)
        vals = np.empty(len(rows))
        for i, r in enumerate(rows):
            cell = r[j].strip() if j < len(r) else ""
            if cell in _MISSING:
                vals[i] = np.nan
                continue
            try:
                v = float(cell)
            except ValueError:
                raise InputError(f"column {c!r}, row {i + 2}: {cell!r} is not a number") from None
            vals[i] = v if math.isfinite(v) else np.nan
        out[c] = vals
    return out, len(rows)


def _clean(v: float | None) -> float | None:
    if v is None or not math.isfinite(v):
        return None
    return round(float(v), 6)


def run(args: argparse.Namespace) -> int:
    err = sys.stderr
    if args.interval_s <= 0:
        print("kubetide forecast: --interval-s must be > 0", file=err)
        return 2
    if args.train_rows < 1 or args.horizon_rows < 0:
        print("kubetide forecast: --train-rows must be >= 1 and --horizon-rows >= 0", file=err)
        return 2
    columns = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
    try:
        data, _ = _read(args.csv, columns, args.train_rows)
    except InputError as exc:
        print(f"kubetide forecast: {exc}", file=err)
        return 2
    result: dict[str, dict] = {}
    for name, series in data.items():
        method = getattr(args, "method", "auto")
        f = forecast(series[: args.train_rows], args.interval_s, args.horizon_rows, method=method)
        result[name] = {
            "periods": [{"period_s": p.period_s, "confidence": p.confidence} for p in f.periods],
            "method": f.method,
            "forecast": [_clean(v) for v in f.values],
            "backtest_error": _clean(f.backtest_error),
        }
    doc = {"columns": result, "train_rows": args.train_rows, "horizon_rows": args.horizon_rows,
           "interval_s": args.interval_s}
    if args.json:
        sys.stdout.write(orjson.dumps(doc).decode() + "\n")
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"forecast: {args.horizon_rows} rows after row {args.train_rows} ({args.interval_s:g} s apart)")
    for c in ("column", "periods", "method", "backtest WAPE", "forecast min", "forecast max", "first values"):
        t.add_column(c)
    for name, r in result.items():
        vals = [v for v in r["forecast"] if v is not None]
        periods = ", ".join(f"{_human(p['period_s'])} ({p['confidence']:.2f})" for p in r["periods"]) or "none"
        t.add_row(name, periods, r["method"],
                  "-" if r["backtest_error"] is None else f"{r['backtest_error']:.1%}",
                  f"{min(vals):.4g}" if vals else "-", f"{max(vals):.4g}" if vals else "-",
                  " ".join(f"{v:.4g}" for v in vals[:5]))
    Console().print(t)
    return 0


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)} {unit}"
    return f"{seconds:g} s"
