"""Every benchmark in one run: quality (with baselines), speed, scaling; JSON results and BENCHMARKS.md.

    uv run python -m benchmarks.run            # full mode: benchmarks/results/*.json and BENCHMARKS.md
    uv run python -m benchmarks.run --quick    # a smoke run: benchmarks/results/quick/
    uv run python -m benchmarks.run --sections speed   # re-run one section; the report is re-rendered
    uv run python -m benchmarks.run --sections ""      # only re-render BENCHMARKS.md from benchmarks/results/
    uv run python -m benchmarks.run --sections seeds   # KolektorSDD over 3 training seeds (not in the default run)
    uv run python -m benchmarks.run --sections default_elpv   # ELPV with the folder default (not in the default run)
    uv run python -m benchmarks.run --sections rescored_seeds   # the seeds' models with folder.yaml's current scoring
    uv run python -m benchmarks.run --sections encoders   # own and pretrained encoders on KolektorSDD, BSData, ELPV
    uv run python -m benchmarks.run --sections fit_memory   # peak memory of fitting on 2,000 images at 640 x 256
    uv run python -m benchmarks.run --sections archive   # archive images/s: one process, Ray with 1 and 2 actors
    uv run python -m benchmarks.run --sections decoder_directions   # decoder directions, the reconstruction alone
    uv run python -m benchmarks.run --sections signals   # the shipped pipelines: each signal, the choice, minutes
    uv run python -m benchmarks.run --sections calibration   # realised false-positive rates at 1% and 5%

Each section's JSON is written as soon as it finishes. Quality needs MNIST and KolektorSDD under
--datasets (default ../shared/datasets); ELPV comes with the elpv-dataset package. The HTTP
benchmark serves the ELPV model that the quality section exported (kept in benchmarks/.work/).
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from benchmarks import (
    archive,
    calibration,
    decoder_directions,
    default_elpv,
    encoders,
    fit_memory,
    quality,
    report,
    rescored_seeds,
    scaling,
    seeds,
    signals,
    speed,
)
from benchmarks.environment import environment
from benchmarks.kept import MEASURED_CODE

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("quality", "speed", "scaling")
# Reported when present; not in a default run (each takes from several minutes to about two hours on 2 cores).
OPTIONAL_SECTIONS = (
    "seeds",
    "default_elpv",
    "rescored_seeds",
    "encoders",
    "fit_memory",
    "archive",
    "decoder_directions",
    "signals",
    "calibration",
)


def commit() -> str:
    """The checkout's short commit hash, "+changes" when the measured code (not the results) differs from it."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    changed = subprocess.run(
        ["git", "status", "--porcelain", "--", *MEASURED_CODE, ":(exclude)benchmarks/results"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    return (head or "unknown") + ("+changes" if changed.strip() else "")


def run_section(name: str, quick: bool, datasets: Path, work: Path, output: Path) -> Any:
    if name == "quality":
        return quality.run(quick, datasets, work, work / "elpv-model", output / "rows")
    if name in ("speed", "archive"):
        if not (work / "elpv-model").is_dir():
            raise SystemExit(
                f"the {name} section scores with the ELPV model exported by the quality section: run that first "
                f"({work})"
            )
        return (
            speed.run(quick, work / "elpv-model", work)
            if name == "speed"
            else archive.run(quick, work / "elpv-model", work)
        )
    if name == "seeds":
        return seeds.run(quick, datasets, work, output / "rows")
    if name == "default_elpv":
        return default_elpv.run(quick, work)
    if name == "rescored_seeds":
        return rescored_seeds.run(quick, datasets, work, output)
    if name == "fit_memory":
        return fit_memory.run(quick)
    if name == "encoders":
        return encoders.run(quick, datasets, work, output / "rows")
    if name == "decoder_directions":
        return decoder_directions.run(quick, datasets, work, output / "rows")
    if name == "signals":
        return signals.run(quick, datasets, work, output / "rows")
    if name == "calibration":
        return calibration.run(quick, datasets, work, output / "rows")
    return scaling.run(quick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer digits, epochs and repeats")
    parser.add_argument(
        "--datasets", type=Path, default=ROOT.parent / "shared" / "datasets", help="holds MNIST/ and kolektorsdd/"
    )
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS + OPTIONAL_SECTIONS)}",
    )
    args = parser.parse_args()
    mode = "quick" if args.quick else "full"
    output = ROOT / "benchmarks" / "results" / ("quick" if args.quick else "")
    work = ROOT / "benchmarks" / ".work" / mode
    output.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    command = "uv run python -m benchmarks.run" + (" --quick" if args.quick else "")
    for name in filter(None, args.sections.split(",")):
        started = time.perf_counter()
        result = run_section(name, args.quick, args.datasets.resolve(), work, output)
        record = {
            "command": command,
            "mode": mode,
            "date": datetime.date.today().isoformat(),
            "commit": commit(),
            "environment": environment(),
            "seconds": round(time.perf_counter() - started, 1),
            name: result,
        }
        (output / f"{name}.json").write_text(json.dumps(record, indent=1))
        print(f"{name}: {record['seconds']:.0f} s, written to {output / (name + '.json')}", flush=True)
    if all((output / f"{name}.json").is_file() for name in SECTIONS):
        markdown = render_report(output)
        (output / "BENCHMARKS.md" if args.quick else ROOT / "BENCHMARKS.md").write_text(markdown)
        print(markdown)


def render_report(output: Path) -> str:
    """BENCHMARKS.md from the section JSONs in `output`: the default sections, then the optional ones present."""
    present = SECTIONS + tuple(name for name in OPTIONAL_SECTIONS if (output / f"{name}.json").is_file())
    return report.render({name: json.loads((output / f"{name}.json").read_text()) for name in present})


if __name__ == "__main__":
    main()
