"""The pipeline's record of itself (DIR/pipeline.json): which config, which MLflow runs, which steps finished.

It is rewritten atomically after every change, so a run killed at any moment leaves a readable
record, and the next run knows which steps to skip and which MLflow runs to continue.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from anomaly.config import flatten_mapping
from anomaly.errors import AnomalyError

STATE_FILE = "pipeline.json"
DONE, RUNNING, FAILED = "done", "running", "failed"


@dataclass
class StepRecord:
    status: str
    run_id: str
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    seconds: float | None = None  # wall-clock time of the attempt that finished (or failed)


@dataclass
class PipelineState:
    config: dict[str, Any]
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    steps: dict[str, StepRecord] = field(default_factory=dict)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        temporary = directory / f".{STATE_FILE}.tmp"
        temporary.write_text(json.dumps(asdict(self), indent=1))
        os.replace(temporary, directory / STATE_FILE)

    @classmethod
    def load(cls, directory: Path) -> PipelineState | None:
        path = directory / STATE_FILE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            steps = {name: StepRecord(**record) for name, record in data.pop("steps").items()}
            return cls(**data, steps=steps)
        except (json.JSONDecodeError, TypeError, KeyError):
            raise AnomalyError(
                f"{path} is damaged: remove it (or pass --restart) to start this pipeline over"
            ) from None

    def check_same_config(self, config: dict[str, Any], directory: Path) -> None:
        """A resumed pipeline must run the config it started with; mixing two would corrupt its record."""
        before, now = flatten_mapping(self.config), flatten_mapping(config)
        changed = sorted(key for key in before.keys() | now.keys() if before.get(key) != now.get(key))
        if changed:
            raise AnomalyError(
                f"{directory} holds a pipeline run of another config ({changed[0]}: {before.get(changed[0])!r} -> "
                f"{now.get(changed[0])!r}); use another --output, or --restart to start over there"
            )
