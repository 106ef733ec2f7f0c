"""Score an archive: list its images, skip those an earlier run already wrote, score the rest on a Ray Data actor pool
(local or a cluster: RAY_ADDRESS) or in this process, and write the rows as Parquet part files in the output folder."""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from anomaly.archive.decisions import FDR_RULE, TARGET_FPR_RULE, apply_decisions, check_fdr
from anomaly.archive.location import ArchiveLocation, filesystem_errors
from anomaly.archive.scorer import BatchScorer, result_schema
from anomaly.errors import AnomalyError
from anomaly.imageio import IMAGE_SUFFIXES
from anomaly.runtime.bundle import OnnxDetector, check_target_fpr
from anomaly.runtime.resolve import REGISTRY_PREFIX, resolve_model

logger = logging.getLogger(__name__)

# Rows per Parquet part at most: what a killed job loses at most per writer, and what a resumed one re-scores.
ROWS_PER_FILE = 256
BATCH_SIZE = 16
HIDDEN = (".", "_")  # unfinished local parts and engine bookkeeping; never results


@dataclass(frozen=True)
class ArchiveSummary:
    engine: str  # "ray" or "local"
    actors: int
    images: int  # image files under the input
    skipped: int  # already in the output, from an earlier run
    scored: int  # rows written by this run, errors included
    errors: int  # of those, files that could not be read or decoded (their reason is in the `error` column)
    output: str
    heatmaps: str | None
    seconds: float
    decision_rule: str  # target_fpr or fdr_bh (anomaly.archive.decisions)
    flagged: int  # images flagged over the whole output by that rule

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def part_files(output: ArchiveLocation) -> list[str]:
    from pyarrow import fs

    with filesystem_errors(output.location):
        info = output.filesystem.get_file_info(output.root)
        if info.type == fs.FileType.NotFound:
            return []
        if info.type != fs.FileType.Directory:
            raise AnomalyError(f"output {output.location} exists and is not a folder of Parquet files")
        entries = output.filesystem.get_file_info(fs.FileSelector(output.root))
    return sorted(
        entry.path for entry in entries if entry.type == fs.FileType.File and entry.base_name.endswith(".parquet")
    )


def read_parts(output: ArchiveLocation, columns: list[str]) -> Any:
    """Every finished part as one table. A part cut short by a killed job cannot be read: it is removed, so its
    images count as not done and are scored again."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for path in part_files(output):
        if path.rsplit("/", 1)[-1].startswith(HIDDEN):
            output.filesystem.delete_file(path)
            continue
        try:
            with output.filesystem.open_input_file(path) as handle:
                tables.append(pq.read_table(handle, columns=columns))
        except (pa.ArrowInvalid, OSError):
            logger.warning("removing %s: cut short by an interrupted run; its images are scored again", path)
            output.filesystem.delete_file(path)
    return (
        pa.concat_tables(tables)
        if tables
        else pa.schema([result_schema().field(name) for name in columns]).empty_table()
    )


def pinned_reference(model: str) -> str:
    """The model every worker loads: a folder as an absolute path, a registry alias pinned to its current version, so
    a promotion during the job cannot mix two models in one output. Loaded once here to fail before any work starts."""
    resolved = resolve_model(model)
    OnnxDetector(resolved.directory)
    if model.startswith(REGISTRY_PREFIX):
        return f"{REGISTRY_PREFIX}{resolved.name}/{resolved.version}"
    return str(resolved.directory.resolve())


def score_in_process(
    todo: list[str], scorer_args: dict[str, Any], output: ArchiveLocation, batch_size: int, rows_per_file: int
) -> None:
    """Each part is written under a hidden name and renamed when complete, so a killed run leaves only whole parts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    scorer = BatchScorer(**scorer_args)
    run = uuid.uuid4().hex[:12]
    output.filesystem.create_dir(output.root, recursive=True)
    for number, start in enumerate(range(0, len(todo), rows_per_file)):
        chunk = todo[start : start + rows_per_file]
        batches = [
            scorer({"path": np.array(chunk[i : i + batch_size], dtype=object)})
            for i in range(0, len(chunk), batch_size)
        ]
        name = f"part-{run}-{number:06d}.parquet"
        with output.filesystem.open_output_stream(output.full_path(f".{name}")) as stream:
            pq.write_table(pa.concat_tables(batches), stream)
        output.filesystem.move(output.full_path(f".{name}"), output.full_path(name))


def import_ray() -> Any:
    """Ray, with workers that run this interpreter and its installed packages. Ray's default under `uv run` packs the
    working directory into a fresh environment without the project's extras, whose workers cannot import Ray; it is
    read once, when Ray is first imported, so it is switched off here unless RAY_ENABLE_UV_RUN_RUNTIME_ENV is set.
    Workers Ray starts here run at normal priority (Ray's default, niceness 15, starves the actors that do the work
    whenever anything else runs on the machine) unless RAY_worker_niceness says otherwise."""
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    os.environ.setdefault("RAY_worker_niceness", "0")
    import ray
    import ray.data

    return ray


def connect_ray(**init_args: Any) -> Any:
    """Join the cluster at RAY_ADDRESS, or start Ray on this machine; returns the ray module."""
    ray = import_ray()
    if not ray.is_initialized():
        init_args.setdefault("address", os.environ.get("RAY_ADDRESS"))
        ray.init(include_dashboard=False, logging_level=logging.WARNING, **init_args)
    return ray


def score_on_ray(
    todo: list[str],
    scorer_args: dict[str, Any],
    output: ArchiveLocation,
    batch_size: int,
    rows_per_file: int,
    actors: int | None,
) -> int:
    """Ray Data: the paths as blocks, an actor pool of BatchScorer (one single-threaded ONNX Runtime session per
    actor and CPU), Parquet written by Ray as blocks finish. Connects to RAY_ADDRESS when set, else starts Ray here."""
    ray = connect_ray()
    actors = actors or max(1, int(ray.cluster_resources().get("CPU", 1)))
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    # At least two blocks per actor, so every actor has work even when the archive is smaller than a few parts.
    blocks = min(len(todo), max(math.ceil(len(todo) / rows_per_file), 2 * actors))
    dataset = ray.data.from_items([{"path": path} for path in todo], override_num_blocks=blocks)
    scored = dataset.map_batches(
        BatchScorer,
        fn_constructor_kwargs={**scorer_args, "threads": 1},
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=1,
    )
    # Writing takes no CPU slot: the actors may hold every CPU, and a write waiting for one would never start.
    scored.write_parquet(output.root, filesystem=output.filesystem, ray_remote_args={"num_cpus": 0})
    return actors


def ray_available() -> bool:
    try:
        import_ray()
    except ImportError:
        return False
    return True


def score_archive(
    model: str,
    source: str,
    output: str,
    local: bool = False,
    actors: int | None = None,
    target_fpr: float | None = None,
    heatmaps: bool = False,
    batch_size: int = BATCH_SIZE,
    rows_per_file: int = ROWS_PER_FILE,
    fdr: float | None = None,
) -> ArchiveSummary:
    """Score every image under `source` not yet in `output`, then decide over all of them (at `fdr` by
    Benjamini-Hochberg, else each at its target FPR); the same call resumes a killed job."""
    started = time.perf_counter()
    check_target_fpr(target_fpr)
    check_fdr(fdr)
    inputs, results = ArchiveLocation(source), ArchiveLocation(output)
    files = inputs.image_files()
    if not files:
        raise AnomalyError(f"no image files under {source} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    done = set(read_parts(results, ["path"]).column("path").to_pylist())
    todo = [relative for relative in files if inputs.display(relative) not in done]
    heatmap_location = ArchiveLocation(heatmap_folder(output)) if heatmaps else None
    engine, used_actors = ("local", 1) if local or not ray_available() else ("ray", actors or 0)
    if engine == "local" and not local:
        logger.warning("Ray is not installed: scoring in this process (install the archive extra for Ray)")
    if todo:
        scorer_args = {
            "model": pinned_reference(model),
            "source": inputs,
            "target_fpr": target_fpr,
            "heatmaps": heatmap_location,
        }
        if engine == "ray":
            used_actors = score_on_ray(todo, scorer_args, results, batch_size, rows_per_file, actors)
        else:
            with filesystem_errors(output):  # writing parts and heat maps; one image's read errors stay in its row
                score_in_process(todo, scorer_args, results, batch_size, rows_per_file)
    written = read_parts(results, ["path", "error"])  # also removes unfinished parts: what is left is decided on
    flagged = apply_decisions(results, part_files(results), fdr)
    new = {inputs.display(relative) for relative in todo}
    rows = [
        error
        for path, error in zip(written.column("path").to_pylist(), written.column("error").to_pylist())
        if path in new
    ]
    return ArchiveSummary(
        engine=engine,
        actors=used_actors,
        images=len(files),
        skipped=len(files) - len(todo),
        scored=len(rows),
        errors=sum(error is not None for error in rows),
        output=output,
        heatmaps=heatmap_location.location if heatmap_location else None,
        seconds=round(time.perf_counter() - started, 2),
        decision_rule=TARGET_FPR_RULE if fdr is None else FDR_RULE,
        flagged=flagged,
    )


def heatmap_folder(output: str) -> str:
    """Heat maps go beside the results folder, not inside it, so Parquet readers see only results."""
    stem = output.rstrip("/")
    stem = stem[: -len(".parquet")] if stem.endswith(".parquet") else stem
    return f"{stem}-heatmaps"
