"""Archive scoring throughput: the quality section's ELPV model over ELPV cell images written as PNG files, scored
by `anomaly score --input --output` in one process and on a local Ray cluster with 1 and 2 actors.

    uv run python -m benchmarks.run --sections archive

Images/s counts the whole job as a user runs it (listing, reading, decoding, inference, p-values, Parquet), after
Ray itself has started; each case writes a fresh output. Quick mode: 64 images.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from PIL import Image

from anomaly.archive.job import connect_ray, score_archive

CASES = {"one_process": {"local": True}, "ray_1_actor": {"actors": 1}, "ray_2_actors": {"actors": 2}}


def write_elpv_archive(folder: Path, count: int) -> Path:
    """The first `count` ELPV cell images (300 x 300, 8-bit) as PNG files, as a plant's archive would hold them."""
    from elpv_dataset.utils import load_dataset

    if folder.is_dir() and len(list(folder.glob("*.png"))) == count:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    images = load_dataset()[0][:count]
    for index, image in enumerate(images):
        Image.fromarray(image).save(folder / f"cell-{index:05d}.png")
    return folder


def run(quick: bool, model_dir: Path, scratch: Path) -> dict[str, Any]:
    archive = write_elpv_archive(scratch / "archive-images", 64 if quick else 1024)
    ray = connect_ray(num_cpus=os.cpu_count(), _node_ip_address="127.0.0.1")
    cases = {}
    try:
        for name, options in CASES.items():
            output = scratch / f"archive-{name}.parquet"
            shutil.rmtree(output, ignore_errors=True)
            summary = score_archive(str(model_dir), str(archive), str(output), **options)
            cases[name] = {**summary.to_dict(), "images_per_s": round(summary.scored / summary.seconds, 2)}
            print(name, cases[name], flush=True)
    finally:
        ray.shutdown()
    two, one = cases["ray_2_actors"]["images_per_s"], cases["ray_1_actor"]["images_per_s"]
    return {
        "model": str(model_dir),
        "images": len(list(archive.glob("*.png"))),
        "cpus": os.cpu_count(),
        "cases": cases,
        "two_to_one_actor_ratio": round(two / one, 2),
    }
