"""Rows of the long benchmark sections, kept as each finishes, so an interrupted section resumes with the rows it lacks.

Rows are kept per commit (benchmarks/.work/<mode>/rows/<commit>/), so a row is never reused by another version of the
code; uncommitted changes are not seen, so commit before a run whose numbers will be quoted.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def commit() -> str:
    """The checked-out commit, or "uncommitted" outside a git checkout."""
    result = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return result.stdout.strip() if result.returncode == 0 else "uncommitted"


def kept_row(scratch: Path, name: str, measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """scratch/rows/<commit>/<name>.json, measured by `measure` only if it is not there yet."""
    record = scratch / "rows" / commit() / f"{name}.json"
    if not record.is_file():
        row = measure()
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(row, indent=1))
        print(f"kept {record}", flush=True)
    return json.loads(record.read_text())
