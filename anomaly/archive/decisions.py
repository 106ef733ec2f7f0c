"""The archive's decisions, made once every image is scored: each image at its target false-positive rate, or
Benjamini-Hochberg over the whole archive at a false-discovery rate.

At a 1% false-positive rate, an archive of 100,000 normal images yields about 1,000 false alarms. Benjamini-Hochberg
(scipy.stats.false_discovery_control) instead bounds the expected share of normal images among those flagged, which
is what a person reviewing the flagged images pays for. It needs every p-value at once, so it runs after the scoring
engine has written all parts, and rewrites the parts whose decisions change; a resumed job decides again over the
whole archive. Each row records the rule that decided it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from anomaly.archive.location import ArchiveLocation, filesystem_errors
from anomaly.errors import AnomalyError

TARGET_FPR_RULE = "target_fpr"
FDR_RULE = "fdr_bh"


def check_fdr(fdr: float | None) -> None:
    if fdr is not None and not 0 < fdr < 1:
        raise AnomalyError(f"--fdr must be in (0, 1), got {fdr}")


def decisions(pvalues: np.ndarray, target_fprs: np.ndarray, fdr: float | None) -> tuple[np.ndarray, np.ndarray]:
    """(is_anomaly, q-value) per row; rows without a p-value (unreadable files) are NaN and never flagged."""
    from scipy.stats import false_discovery_control

    scored = ~np.isnan(pvalues)
    qvalues = np.full(len(pvalues), np.nan)
    if fdr is None:
        return scored & (np.nan_to_num(pvalues, nan=1.0) < np.nan_to_num(target_fprs, nan=0.0)), qvalues
    if scored.any():
        qvalues[scored] = false_discovery_control(pvalues[scored], method="bh")
    return scored & (np.nan_to_num(qvalues, nan=1.0) <= fdr), qvalues


def decided_table(table: Any, flagged: np.ndarray, qvalues: np.ndarray, fdr: float | None) -> Any:
    """`table` with is_anomaly, decision_rule, fdr and q_value set (null where the row has no scores)."""
    import pyarrow as pa

    from anomaly.archive.scorer import result_schema

    scored = ~np.isnan(numbers([table], "p_combined"))
    columns = {
        "is_anomaly": pa.array([bool(f) if s else None for f, s in zip(flagged, scored)], pa.bool_()),
        "decision_rule": pa.array(
            [(FDR_RULE if fdr is not None else TARGET_FPR_RULE) if s else None for s in scored], pa.string()
        ),
        "fdr": pa.array([fdr if s and fdr is not None else None for s in scored], pa.float64()),
        "q_value": pa.array([None if np.isnan(q) else float(q) for q in qvalues], pa.float64()),
    }
    schema = result_schema()
    return pa.table(
        {name: columns[name] if name in columns else table.column(name) for name in schema.names}, schema=schema
    )


def numbers(tables: list[Any], name: str) -> np.ndarray:
    """One float column of all tables, nulls as NaN."""
    return np.concatenate(
        [np.zeros(0), *(table.column(name).to_numpy(zero_copy_only=False).astype(np.float64) for table in tables)]
    )


def apply_decisions(output: ArchiveLocation, parts: list[str], fdr: float | None) -> int:
    """Decide every scored row in `parts` by one rule; rewrite (atomically: hidden name, then rename) the parts whose
    rows change. Returns how many images are flagged."""
    import pyarrow.parquet as pq

    with filesystem_errors(output.location):
        tables = []
        for path in parts:
            with output.filesystem.open_input_file(path) as handle:
                tables.append(pq.read_table(handle))
        flagged, qvalues = decisions(numbers(tables, "p_combined"), numbers(tables, "target_fpr"), fdr)
        start = 0
        for path, table in zip(parts, tables):
            rows = slice(start, start + table.num_rows)
            start += table.num_rows
            decided = decided_table(table, flagged[rows], qvalues[rows], fdr)
            if table.schema.equals(decided.schema) and table.equals(decided):
                continue
            folder, name = path.rsplit("/", 1)
            with output.filesystem.open_output_stream(f"{folder}/.{name}") as stream:
                pq.write_table(decided, stream)
            output.filesystem.move(f"{folder}/.{name}", path)
    return int(flagged.sum())
