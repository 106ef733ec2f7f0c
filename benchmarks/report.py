"""BENCHMARKS.md from the benchmark JSON: every number in it comes from one `benchmarks.run`."""

from __future__ import annotations

from typing import Any

import numpy as np

from anomaly.calibration.promise import binomial_interval

SIGNALS = ("reconstruction_auroc", "latent_auroc", "combined_auroc")
BASELINES = ("isolation_forest", "pca_reconstruction")


def f(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def mnist_table(mnist: dict[str, Any]) -> list[str]:
    lines = [
        "| model | digit | reconstruction | latent | combined | test FPR | IsolationForest | PCA |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for architecture, rows in mnist.items():
        for digit, row in rows.items():
            cells = (
                [f(row[key]) for key in SIGNALS]
                + [f"{row['test_fpr']:.2%}"]
                + [f(row["baselines"][key]) for key in BASELINES]
            )
            lines.append(f"| {architecture} | {digit} | " + " | ".join(cells) + " |")
        mean = [f(np.mean([row[key] for row in rows.values()])) for key in SIGNALS]
        baseline_means = [f(np.mean([row["baselines"][key] for row in rows.values()])) for key in BASELINES]
        lines.append(f"| {architecture} | **mean** | " + " | ".join([*mean, "", *baseline_means]) + " |")
    return lines


def dataset_row(name: str, row: dict[str, Any], note: str = "") -> str:
    """One data set's row, named with the input size it was trained at (recorded since the 640 x 256 KolektorSDD
    config)."""
    details = [f"{row['image_size'][0]} x {row['image_size'][1]}"] if "image_size" in row else []
    details += [note] if note else []
    name = f"{name} ({'; '.join(details)})" if details else name
    cells = [
        f(row["combined_auroc"]),
        f(row["reconstruction_auroc"]),
        f(row["latent_auroc"]),
        f(row.get("pixel_auroc")),
        f(row.get("pixel_aupro")),
        f"{row['test_fpr']:.2%}",
        f(row["baselines"]["isolation_forest"]),
        f(row["baselines"]["pca_reconstruction"]),
    ]
    return f"| {name} | " + " | ".join(cells) + " |"


def headline(quality: dict[str, Any]) -> list[str]:
    """Our best detector against each baseline, per data set."""
    lines = ["| data set | our best (image AUROC) | IsolationForest | PCA |", "| --- | --- | --- | --- |"]
    best_mnist = max(
        quality["mnist"], key=lambda arch: np.mean([r["combined_auroc"] for r in quality["mnist"][arch].values()])
    )
    rows = quality["mnist"][best_mnist].values()
    lines.append(
        f"| MNIST one-class, mean over digits ({best_mnist}) | {f(np.mean([r['combined_auroc'] for r in rows]))} | "
        f"{f(np.mean([r['baselines']['isolation_forest'] for r in rows]))} | "
        f"{f(np.mean([r['baselines']['pca_reconstruction'] for r in rows]))} |"
    )
    for name in ("kolektorsdd", "elpv"):
        row = quality[name]
        lines.append(
            f"| {name} | {f(row['combined_auroc'])} | {f(row['baselines']['isolation_forest'])} | "
            f"{f(row['baselines']['pca_reconstruction'])} |"
        )
    return lines


def speed_lines(speed: dict[str, Any]) -> list[str]:
    inference = speed["inference"]
    measured = inference.get("matmul_gflops", {"torch": inference["cpu_peak_gflops"]})
    each = ", ".join(f"{name} {gflops:.1f}" for name, gflops in measured.items())
    lines = [
        f"Practical CPU peak (float32 4096x4096 matmul, {inference['threads']} threads; the best of {each}): "
        f"**{inference['cpu_peak_gflops']:.1f} GFLOP/s**.",
        "",
    ]
    lines += ["| model | training images/s |", "| --- | --- |"]
    lines += [f"| {name} | {row['images_per_s']:.1f} |" for name, row in speed["training"].items()]
    lines += [
        "",
        "| model | GFLOP/image | batch | torch eager img/s | ORT fp32 img/s | ORT int8 img/s | fp32 / eager | fp32 "
        "p50 / p99 ms | fp32 share of CPU peak |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, case in inference["cases"].items():
        for batch in ("batch_1", "batch_64"):
            row = case[batch]
            fp32 = row["onnxruntime_fp32"]
            lines.append(
                f"| {name} | {case['gflops_per_image']:.3f} | {batch.split('_')[1]} | "
                f"{row['torch_eager']['images_per_s']:.0f} | {fp32['images_per_s']:.0f} | "
                f"{row['onnxruntime_int8']['images_per_s']:.0f} | **{row['fp32_speedup_vs_eager']:.2f}x** | "
                f"{fp32['p50_ms']:.1f} / {fp32['p99_ms']:.1f} | {row['fp32_fraction_of_cpu_peak']:.1%} |"
            )
    http = speed["http"]
    lines += [
        "",
        f"HTTP (`/score`, {http['clients']} concurrent clients on the same machine, {http['seconds']:.0f} s per case, "
        "the ELPV model):",
        "",
        "| case | requests/s | p50 ms | p99 ms | errors |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, row in http["cases"].items():
        lines.append(
            f"| {name.replace('_', ' ')} | {row['throughput_rps']:.1f} | {row['latency_p50_ms']:.0f} | "
            f"{row['latency_p99_ms']:.0f} | {row['errors']} |"
        )
    lines += ["", f"Adaptive batching / none: **{http['throughput_ratio']:.2f}x**."]
    return lines


def scaling_lines(scaling: dict[str, Any]) -> list[str]:
    lines = ["| image size | GFLOP/image | training images/s | ORT inference images/s |", "| --- | --- | --- | --- |"]
    for size, row in scaling["image_size"].items():
        lines.append(
            f"| {size} x {size} | {row['gflops_per_image']:.3f} | {row['train_images_per_s']:.1f} | "
            f"{row['onnx_images_per_s']:.1f} |"
        )
    lines += ["", "| training images | seconds per epoch (64 px) |", "| --- | --- |"]
    lines += [f"| {count} | {row['epoch_seconds']:.2f} |" for count, row in scaling["train_set_size"].items()]
    return lines + ["", scaling["notes"]]


def seeds_lines(record: dict[str, Any]) -> list[str]:
    """KolektorSDD per training seed, then mean ± standard deviation."""
    seeds = record["seeds"]
    keys = ("combined_auroc", "reconstruction_auroc", "latent_auroc", "pixel_auroc", "pixel_aupro")
    size = next(iter(seeds["seeds"].values()))["image_size"]
    lines = [
        f"`{record['command']} --sections seeds` on {record['date']} ({record['seconds'] / 60:.0f} minutes): "
        f"`{seeds['pipeline']}` as it is then ({size[0]} x {size[1]}, {seeds['epochs']} epochs at most), one run per "
        "training seed.",
        "",
        "| seed | image AUROC | reconstruction | latent | pixel AUROC | AUPRO | test FPR | training s | ONNX images/s "
        "|",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for seed, row in seeds["seeds"].items():
        lines.append(
            f"| {seed} | "
            + " | ".join(f(row[key]) for key in keys)
            + f" | {row['test_fpr']:.2%} | {row['training_seconds']:.0f} | {row['onnx_images_per_s']:.1f} |"
        )
    mean, std = seeds["mean"], seeds["std"]
    lines.append(
        "| **mean ± sd** | "
        + " | ".join(f"{f(mean[key])} ± {f(std[key])}" for key in keys)
        + f" | {mean['test_fpr']:.2%} | {mean['training_seconds']:.0f} | {mean['onnx_images_per_s']:.1f} |"
    )
    return lines


def chosen_text(chosen: dict[str, Any]) -> str:
    """What calibration chose where the config says auto: "level 1, fisher"."""
    return f"level {chosen['patch_level']}, {chosen['combine']}"


def default_elpv_lines(record: dict[str, Any]) -> list[str]:
    """ELPV trained and scored with the folder default, in the real-defects table's columns."""
    run = record["default_elpv"]
    return [
        f"`{record['command']} --sections default_elpv` on {record['date']} ({record['seconds'] / 60:.0f} minutes): "
        f"`{run['pipeline']}` as it is then with `{' '.join(run['overrides'])}` ({run['epochs']} epochs at most, "
        f"training {run['elpv']['training_seconds']:.0f} s; validation chose "
        f"{chosen_text(run['elpv']['chosen_scoring'])}).",
        "",
        "| data set | image AUROC | reconstruction | latent | pixel AUROC | AUPRO | test FPR | IsolationForest | PCA |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        dataset_row("ELPV", run["elpv"], "p = 0 vs p >= 2/3"),
    ]


def rescored_seeds_lines(record: dict[str, Any]) -> list[str]:
    """The seeds' models with the folder default's current scoring, beside what the seeds section measured."""
    run = record["rescored_seeds"]
    keys = ("combined_auroc", "reconstruction_auroc", "latent_auroc", "pixel_auroc", "pixel_aupro")
    settings = ", ".join(
        f"`{item}`" for item in run["scoring"] if any(key in item for key in ("patch", "heatmap", "combine", "latent"))
    )
    lines = [
        f"`{record['command']} --sections rescored_seeds` on {record['date']} ({record['seconds'] / 60:.0f} minutes): "
        f"the models of the seeds section ({run['seeds_section_date']}) calibrated and evaluated again with "
        f"`{run['pipeline']}`'s scoring as it is then ({settings}). Validation AUROC: held-out normals plus synthetic "
        "anomalies, what settings are chosen by. In brackets: the seeds section's value for the same model.",
        "",
        "| seed | image AUROC | reconstruction | latent | pixel AUROC | AUPRO | test FPR | recall at target | "
        "validation AUROC (image / pixel) | chosen: patch level, combination | model.onnx MB | ONNX images/s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for seed, row in run["seeds"].items():
        before = row["seeds_section"]
        cells = [f"{f(row[key])} ({f(before[key])})" for key in keys]
        validation = row["validation_auroc"]
        lines.append(
            f"| {seed} | "
            + " | ".join(cells)
            + f" | {row['test_fpr']:.2%} ({before['test_fpr']:.2%}) | {f(row['recall_at_target_fpr'])} | "
            f"{f(validation['combined'])} / {f(validation.get('pixel'))} | {chosen_text(row['chosen_scoring'])} | "
            f"{row['model_onnx_mb']:.0f} | {row['onnx_images_per_s']:.1f} |"
        )
    mean, std = run["mean"], run["std"]
    lines.append(
        "| **mean ± sd** | "
        + " | ".join(f"{f(mean[key])} ± {f(std[key])}" for key in keys)
        + f" | {mean['test_fpr']:.2%} | {f(mean['recall_at_target_fpr'])} | | | | {mean['onnx_images_per_s']:.1f} |"
    )
    return lines


def parity_text(parity: dict[str, float]) -> str:
    """The largest ONNX-against-PyTorch difference among the scores and among the maps (relative, as publishing
    checks)."""
    scores = max(parity.get("reconstruction_score_max_rel_diff", 0.0), parity["latent_distance_max_rel_diff"])
    maps = max(
        parity.get("reconstruction_max_rel_diff", 0.0), parity["anomaly_map_max_rel_diff"]
    )  # graphs exported before pruning had both
    return f"{scores:.0e} / {maps:.0e}"


def encoders_lines(record: dict[str, Any]) -> list[str]:
    """Own and pretrained encoders with the folder default, per surface: validation, test, speed and size."""
    run = record["encoders"]
    surfaces_of: dict[str, list[str]] = {}
    for surface, pipeline in run["pipelines"].items():
        surfaces_of.setdefault(pipeline, []).append(surface)
    used = ", ".join(f"`{pipeline}` ({', '.join(surfaces)})" for pipeline, surfaces in surfaces_of.items())
    lines = [
        f"`{record['command']} --sections encoders` on {record['date']} ({record['seconds'] / 60:.0f} minutes): "
        f"{used} as they are then (pretrained EfficientNet-Lite0), and with "
        f"`{' '.join(run['own_encoder_overrides'])}` (own). Validation: held-out normals plus synthetic anomalies, "
        "what settings are chosen by. ONNX Runtime: test images with preprocessing, batch 8. Parity: the largest "
        "difference between ONNX Runtime and PyTorch that publishing checked (scores against their largest "
        "magnitude, limit 1e-4; maps against their range, limit 1e-3).",
        "",
        "| surface | encoder | validation image / pixel | image AUROC | reconstruction | latent | pixel AUROC | AUPRO "
        "| test FPR | chosen: patch level, combination | training s | total s | model.onnx MB | ONNX images/s | "
        "parity: scores / maps | IsolationForest | PCA |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for surface, rows in run["surfaces"].items():
        for encoder, row in rows.items():
            validation = row["validation_auroc"]
            cells = [
                f"{f(validation['combined'])} / {f(validation.get('pixel'))}",
                *(f(row.get(key)) for key in (*SIGNALS[2:], *SIGNALS[:2])),
                f(row.get("pixel_auroc")),
                f(row.get("pixel_aupro")),
                f"{row['test_fpr']:.2%}",
                chosen_text(row["chosen_scoring"]),
                f"{row['training_seconds']:.0f}",
                f"{row['seconds']:.0f}",
                f"{row['model_onnx_mb']:.0f}",
                f"{row['onnx_images_per_s']:.1f}",
                parity_text(row["parity"]),
                *(f(row["baselines"][key]) for key in BASELINES),
            ]
            lines.append(
                f"| {surface} ({row['image_size'][0]} x {row['image_size'][1]}) | {encoder} | "
                + " | ".join(cells)
                + " |"
            )
    return lines


def fit_memory_lines(record: dict[str, Any]) -> list[str]:
    """Peak memory of fitting the latent distance on many training images."""
    rows = record["fit_memory"]["rows"]
    lines = [
        f"`{record['command']} --sections fit_memory` on {record['date']}: the folder default's latent distance "
        f"fitted on {rows[0]['images']} synthetic images at {rows[0]['image_size'][0]} x {rows[0]['image_size'][1]}, "
        f"each case in a fresh process (limit asked for: {record['fit_memory']['limit_gb']} GB).",
        "",
        "| encoder | patch level | training features GB (memory-mapped) | peak RSS GB | extract s | fit s | bank MB |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {row['encoder']} | {row['patch_level']} | {row['feature_gb']:.2f} | {row['peak_rss_gb']:.2f} | "
        f"{row['extract_seconds']:.0f} | {row['fit_seconds']:.0f} | {row['bank_mb']:.0f} |"
        for row in rows
    ]
    return lines


def archive_lines(record: dict[str, Any]) -> list[str]:
    run = record["archive"]
    names = {"one_process": "one process (`--local`)", "ray_1_actor": "Ray, 1 actor", "ray_2_actors": "Ray, 2 actors"}
    return [
        f"`anomaly score --input --output` over {run['images']} ELPV cell images (PNG files) with the quality "
        f"section's ELPV model, on {run['cpus']} CPUs; the whole job, Ray already started. Two actors against one: "
        f"**{run['two_to_one_actor_ratio']}x**.",
        "",
        "| engine | images/s | seconds | errors |",
        "| --- | --- | --- | --- |",
        *(
            f"| {names[name]} | {case['images_per_s']} | {case['seconds']} | {case['errors']} |"
            for name, case in run["cases"].items()
        ),
    ]


def choice_text(choices: list[dict[str, Any]]) -> str:
    """Each auto choice: the chosen candidate, and the best one with its lead's interval when the best was not kept."""
    parts = []
    for choice in choices:
        setting = choice["setting"].rsplit(".", 1)[1]
        kept = f"{setting} {choice['chosen']}"
        if choice["best"] != choice["chosen"]:
            low, high = choice["best_lead_interval"]
            kept += f" ({choice['best']} led by {low:+.3f}..{high:+.3f})"
        parts.append(kept)
    return "; ".join(parts)


def signals_lines(record: dict[str, Any]) -> list[str]:
    """The shipped pipelines end to end: each signal alone, the chosen combination, the choices and minutes per step."""
    rows = record["signals"]["rows"]
    steps = list(next(iter(rows.values()))["step_seconds"])
    lines = [
        f"`{record['command']} --sections signals` on {record['date']} ({record['seconds'] / 60:.0f} minutes, "
        f"{record['environment']['cpu']}, {record['environment']['cpus_usable']} cores): `anomaly pipeline run` as a "
        "user runs it, pipelines/folder.yaml on KolektorSDD (training seeds 0-2) and BSData, pipelines/elpv.yaml "
        "(the README's main command) on ELPV. Test image AUROC of each signal alone and of the combination the "
        "decision reads; pixel AUROC of the latent map, the reconstruction map and the served heat map; the choices "
        "made on validation (a later candidate only where it leads beyond the bootstrap interval); the realised "
        "false-positive rate on test normals at the calibrated 1%.",
        "",
        "| run | reconstruction | latent | decision | pixel: latent / reconstruction / heat map | AUPRO | FPR at 1% | "
        "choices | " + " | ".join(f"{step} s" for step in steps) + " | total min |",
        "| --- " * (9 + len(steps)) + "|",
    ]
    for name, row in rows.items():
        image, pixel = row["test_image_auroc"], row.get("test_pixel_auroc_by_signal") or {}
        pixels = " / ".join(
            f(value) for value in (pixel.get("latent"), pixel.get("reconstruction"), row.get("test_pixel_auroc"))
        )
        cells = [
            f(image["reconstruction"]),
            f(image["latent"]),
            f(image["combined"]),
            pixels if pixel else "no masks",
            f(row.get("test_aupro")),
            f"{row['test_fpr_at_target']:.1%}",
            choice_text(row["choices"]),
            *(f"{row['step_seconds'][step]:.0f}" for step in steps),
            f"{row['seconds'] / 60:.1f}",
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def decoder_directions_lines(record: dict[str, Any]) -> list[str]:
    """The feature autoencoder's decoder directions, the reconstruction signal alone."""
    run = record["decoder_directions"]
    lines = [
        f"`{record['command']} --sections decoder_directions` on {record['date']} ({record['seconds'] / 60:.0f} "
        f"minutes): each direction trained {run['epochs']} epochs on cached Lite0 maps at the folder default's input "
        "size, scored by its reconstruction error alone (benchmarks/decoder_directions.py). Validation: held-out "
        "normals plus synthetic anomalies.",
        "",
        "| surface | direction | validation image / pixel | test image / pixel | training s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for surface, directions in run["rows"].items():
        for direction, row in directions.items():
            lines.append(
                f"| {surface} | {direction} | {f(row['labelled_val_image_auroc'])} / "
                f"{f(row.get('labelled_val_pixel_auroc'))} | {f(row['test_image_auroc'])} / "
                f"{f(row.get('test_pixel_auroc'))} | {row['train_seconds']:.0f} |"
            )
    return lines


CALIBRATION_TARGETS = ("0.01", "0.05")


def rate_cell(rate: dict[str, Any], normals: int) -> str:
    """ "1.4% (1/69) in 0-4.3%": the realised rate, the count, the 95% binomial range for that many normals, and
    whether it lies inside."""
    low, high = rate["interval"]
    inside = low <= rate["realised_fpr"] <= high
    verdict = "in" if inside else "**outside**"
    return f"{rate['realised_fpr']:.1%} ({rate['flagged']}/{normals}) {verdict} {low:.1%}-{high:.1%}"


def calibration_surface_rows(rows: dict[str, Any]) -> list[tuple[str, dict[str, Any] | None, list[dict[str, Any]]]]:
    """(label, row, rows averaged): each KolektorSDD, BSData and ELPV row alone, the MNIST digits as one."""
    digits = [row for name, row in rows.items() if name.startswith("mnist-")]
    single = [(name, row, [row]) for name, row in rows.items() if not name.startswith("mnist-")]
    return single + ([(f"MNIST, mean of {len(digits)} digits", None, digits)] if digits else [])


def calibration_lines(record: dict[str, Any]) -> list[str]:
    """Realised false-positive rates at 1% and 5% on every surface, with and without the cross-fitted normals."""
    rows = record["calibration"]["rows"]
    lines = [
        f"`{record['command']} --sections calibration` on {record['date']} ({record['seconds'] / 60:.0f} minutes, "
        f"{record['environment']['cpu']}, {record['environment']['cpus_usable']} cores, commit {record['commit']}): "
        "`anomaly pipeline run` with each surface's committed pipeline (folder.yaml on KolektorSDD, seeds 0-2, and "
        "BSData; elpv.yaml; mnist.yaml on each digit). Realised false-positive rate on the test normals at each "
        "target, with the count and the 95% binomial range for that many test normals (a promise that holds lands "
        "inside it). Shipped: blocks hold-out plus the training normals' out-of-fold latent distances "
        "(cross-fitting); hold-out alone: the same model recalibrated on its hold-out only. The `random-holdout` row "
        "holds out single images at random, as the pipelines did before. No timings here: the test suite shared the "
        "two cores during most rows.",
        "",
        "| surface | calibration normals | test normals | image AUROC | 1%: shipped | 5%: shipped | 1%: hold-out "
        "alone | 5%: hold-out alone |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, row, group in calibration_surface_rows(rows):
        if row is not None:
            normals = row["test_counts"]["normal"]
            cells = [
                f"{row['with_cross_fit']['calibration_normals']} ({row['sample_sizes']['calibration_images']} held "
                "out)",
                str(normals),
                f(row["test_image_auroc"]),
                *(
                    rate_cell(row[variant]["rates"][target], normals)
                    for variant in ("with_cross_fit", "holdout_alone")
                    for target in CALIBRATION_TARGETS
                ),
            ]
        else:

            def mean_rate(variant: str, target: str) -> str:
                """The mean realised rate against the range for the mean number of test normals, and how many digits
                lie inside their own range."""
                rates = [r[variant]["rates"][target] for r in group]
                mean = float(np.mean([rate["realised_fpr"] for rate in rates]))
                low, high = binomial_interval(
                    round(np.mean([r["test_counts"]["normal"] for r in group])), float(target)
                )
                inside = sum(rate["interval"][0] <= rate["realised_fpr"] <= rate["interval"][1] for rate in rates)
                where = "in" if low <= mean <= high else "**outside**"
                return (
                    f"{mean:.2%} {where} {low:.1%}-{high:.1%}; digits inside their own range: {inside} of {len(group)}"
                )

            cells = [
                f"{np.mean([r['with_cross_fit']['calibration_normals'] for r in group]):.0f}",
                f"{np.mean([r['test_counts']['normal'] for r in group]):.0f}",
                f(float(np.mean([r["test_image_auroc"] for r in group]))),
                *(
                    mean_rate(variant, target)
                    for variant in ("with_cross_fit", "holdout_alone")
                    for target in CALIBRATION_TARGETS
                ),
            ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def render(records: dict[str, dict[str, Any]]) -> str:
    """`records`: each section's JSON (quality, speed, scaling, and seeds when run) as benchmarks.run wrote it."""
    quality, speed, scaling = (records[name][name] for name in ("quality", "speed", "scaling"))
    first = records["quality"]
    environment = first["environment"]
    minutes = sum(record["seconds"] for record in records.values()) / 60
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `{first['command']}` ({first['mode']} mode): {minutes:.0f} minutes of benchmarks in all. Each "
        "section",
        "was last run as below; a section's numbers come from the commit it names (older records name none).",
        "",
        "| section | run on | commit | CPU | minutes |",
        "| --- | --- | --- | --- | --- |",
        *(
            f"| {name} | {record['date']} | {record.get('commit', '')} | {record['environment']['cpu']} | "
            f"{record['seconds'] / 60:.0f} |"
            for name, record in records.items()
        ),
        "",
        f"Hardware: {environment['cpus_usable']} usable CPUs, no GPU. Python {environment['python']}; "
        + ", ".join(f"{name} {version}" for name, version in environment["packages"].items() if version)
        + ".",
        f"Epochs: MNIST {', '.join(f'{arch} {epochs}' for arch, epochs in quality['epochs']['mnist'].items())}, "
        f"KolektorSDD {quality['epochs']['kolektorsdd']}, ELPV {quality['epochs']['elpv']}.",
        "Baselines are fitted in the same run on the same training normals and scored on the same test images.",
        "",
        "## Headline: our best detector against the baselines (image AUROC)",
        "",
        *headline(quality),
        "",
        "## MNIST one-class (train on one digit, test on all 10,000 test images)",
        "",
        *mnist_table(quality["mnist"]),
        "",
        "## Real defects",
        "",
        "| data set | image AUROC | reconstruction | latent | pixel AUROC | AUPRO | test FPR | IsolationForest | PCA |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        dataset_row("KolektorSDD", quality["kolektorsdd"]),
        dataset_row("ELPV", quality["elpv"], "p = 0 vs p >= 2/3"),
        "",
        *(["## KolektorSDD over training seeds", "", *seeds_lines(records["seeds"]), ""] if "seeds" in records else []),
        *(
            ["## ELPV with the folder default", "", *default_elpv_lines(records["default_elpv"]), ""]
            if "default_elpv" in records
            else []
        ),
        *(
            [
                "## KolektorSDD seeds re-scored with the folder scoring of the day",
                "",
                *rescored_seeds_lines(records["rescored_seeds"]),
                "",
            ]
            if "rescored_seeds" in records
            else []
        ),
        *(
            ["## Own and pretrained encoders", "", *encoders_lines(records["encoders"]), ""]
            if "encoders" in records
            else []
        ),
        *(["## Fitting memory", "", *fit_memory_lines(records["fit_memory"]), ""] if "fit_memory" in records else []),
        *(["## Archive scoring", "", *archive_lines(records["archive"]), ""] if "archive" in records else []),
        *(
            ["## Both signals in the shipped pipelines", "", *signals_lines(records["signals"]), ""]
            if "signals" in records
            else []
        ),
        *(
            [
                "## Decoder directions of the feature autoencoder",
                "",
                *decoder_directions_lines(records["decoder_directions"]),
                "",
            ]
            if "decoder_directions" in records
            else []
        ),
        *(
            ["## Does the false-positive promise hold?", "", *calibration_lines(records["calibration"]), ""]
            if "calibration" in records
            else []
        ),
        "## Speed",
        "",
        *speed_lines(speed),
        "",
        "## Scaling",
        "",
        *scaling_lines(scaling),
        "",
    ]
    return "\n".join(lines)
