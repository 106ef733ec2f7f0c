"""Progress bars for the steps that take more than a few seconds outside Lightning's own (feature extraction,
fitting, scoring), on stderr like Lightning's."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

Item = TypeVar("Item")

# ANOMALY_PROGRESS=0 turns the bars off (logs of unattended runs); they are also off when nothing is described.
ENABLED = os.environ.get("ANOMALY_PROGRESS", "1") != "0"


def progress(items: Iterable[Item], description: str | None) -> Iterator[Item]:
    """`items`, with a progress bar named `description` while they are consumed (none without a description)."""
    if description is None or not ENABLED:
        yield from items
        return
    # In a log file rather than a terminal, a line every half minute instead of a redraw per item.
    interval = 0.1 if sys.stderr.isatty() else 30.0
    yield from tqdm(items, desc=description, file=sys.stderr, leave=False, dynamic_ncols=True, mininterval=interval)
