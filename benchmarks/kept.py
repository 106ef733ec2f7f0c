"""Rows of the long benchmark sections, kept as each finishes, so an interrupted section resumes with the rows it lacks.

Rows are kept per version of the measured code (<rows>/<version>/: the committed trees of anomaly/, pipelines/ and
benchmarks/), so a row is never reused by another version of it, while commits elsewhere (docs, tests) keep the rows.
The full run keeps them in benchmarks/results/rows/, which is committed: a run longer than one sitting goes on in
another checkout with the same code. Uncommitted changes are not seen: commit before a run whose numbers will be quoted.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


MEASURED_CODE = ("anomaly", "pipelines", "benchmarks")


def code_version() -> str:
    """A short hash of the committed trees of MEASURED_CODE, or "uncommitted" outside a git checkout."""
    result = subprocess.run(
        ["git", "rev-parse", *(f"HEAD:{folder}" for folder in MEASURED_CODE)], capture_output=True, text=True, cwd=ROOT
    )
    return hashlib.sha256(result.stdout.encode()).hexdigest()[:12] if result.returncode == 0 else "uncommitted"


def kept_row(
    rows: Path, name: str, measure: Callable[[], dict[str, Any]], leaves: Path | None = None
) -> dict[str, Any]:
    """rows/<code version>/<name>.json, measured by `measure` only if it is not there yet, or if `leaves` (a file or
    folder the measurement writes, which a later section reads) is missing."""
    record = rows / code_version() / f"{name}.json"
    if not record.is_file() or (leaves is not None and not leaves.exists()):
        row = measure()
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(row, indent=1))
        print(f"kept {record}", flush=True)
    return json.loads(record.read_text())
