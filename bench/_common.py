"""Shared helpers of the benchmarks: corpus loading and output (a table, then JSON last)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The whole development corpus when it sits beside the checkout, else the tests' 32 documents.
_DEVELOPMENT_CORPUS = ROOT.parent / "shared" / "corpus" / "tau-airline-dev"
DEFAULT_CORPUS = _DEVELOPMENT_CORPUS if _DEVELOPMENT_CORPUS.is_dir() else ROOT / "tests" / "data" / "corpus"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "sdk"))


def load_corpus(directory: Path) -> list[dict[str, Any]]:
    docs = [json.loads(path.read_text()) for path in sorted(Path(directory).glob("*.json"))]
    if not docs:
        raise SystemExit(f"no JSON documents in {directory}")
    return docs


def print_table(headers: list[str], rows: list[list[Any]]) -> None:
    cells = [[str(h) for h in headers]] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for index, row in enumerate(cells):
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            print("  ".join("-" * width for width in widths))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if value < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def emit_json(data: dict[str, Any]) -> None:
    print(json.dumps(data, sort_keys=True))
