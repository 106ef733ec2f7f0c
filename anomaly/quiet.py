"""What the command line keeps out of a user's log: library chatter they cannot act on.

Lightning's banners and tips, MLflow's database set-up lines and a few warnings that describe this project's own
deliberate choices (a frozen encoder in eval mode, short epochs on small folders) say nothing a user can change.
Warnings about the user's data or settings are left alone.
"""

from __future__ import annotations

import logging
import os
import warnings

CHATTY_LOGGERS = ("lightning.pytorch", "lightning.fabric", "mlflow", "alembic")
# Warnings about how MLflow packs a logged model's environment (pip is absent from a uv environment): errors only.
PACKAGING_LOGGERS = ("mlflow.utils.environment",)
DELIBERATE_WARNINGS = (
    r"Found \d+ module\(s\) in eval mode",  # the frozen pretrained encoder stays in eval mode on purpose
    r"The number of training batches \(\d+\) is smaller than the logging interval",  # per-epoch metrics are logged
    r".*does not have many workers",  # images are decoded once, in memory: workers would only copy them
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # inside Lightning, with this torch
)


def quiet_libraries() -> None:
    """Raise the chatty libraries' log level to warnings and ignore the deliberate-choice warnings. Lightning and
    MLflow set their loggers up when imported, so the commands call this again after importing them."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # MLflow configures its loggers when first imported
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in PACKAGING_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for pattern in DELIBERATE_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
