"""Install boundaries and the README's promises."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import run_cli_process

ROOT = Path(__file__).resolve().parents[1]


def test_scoring_side_modules_import_without_torch():
    code = (
        "import sys, anomaly.config, anomaly.imageio, anomaly.errors, anomaly.cli, anomaly.runtime.bundle, "
        "anomaly.runtime.heatmap, anomaly.runtime.cpus, anomaly.calibration.artifact; print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert result.stdout.strip() == "False"


def test_serving_install_does_not_pull_torch():
    uv = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    result = subprocess.run(
        [uv, "export", "--locked", "--no-dev", "--extra", "serve", "--format", "requirements-txt", "--no-hashes"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )
    packages = {line.split("==")[0].lower() for line in result.stdout.splitlines() if "==" in line}
    assert {"onnxruntime", "bentoml", "numpy", "pillow"} <= packages
    assert not {name for name in packages if name in {"torch", "torchvision", "lightning", "triton"} or name.startswith("nvidia-cu")}


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```bash\n(.+?)\n```", readme)
    test_command = next(command for command in commands if "pytest" in command)
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_readme_main_command_runs_the_default_pipeline():
    commands = re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text())
    main_command = commands[0]
    assert main_command.endswith("uv run anomaly pipeline run --config pipelines/elpv.yaml")
    assert (ROOT / "pipelines" / "elpv.yaml").is_file()


def test_cli_exits_non_zero_with_one_line_on_bad_input(tmp_path):
    result = run_cli_process("train", "--config", str(tmp_path / "missing.yaml"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: config file not found: {tmp_path / 'missing.yaml'}"


def test_elpv_pipeline_is_the_folder_default_on_elpv():
    """The README's main command runs the one default: only where the data comes from and where runs go differ."""
    from anomaly.config import load_config

    folder, elpv = (load_config(ROOT / "pipelines" / name) for name in ("folder.yaml", "elpv.yaml"))
    assert elpv.data.kind == "elpv" and elpv.model.pretrained
    for section in ("model", "loss", "train", "scoring", "trainer"):
        assert getattr(elpv, section) == getattr(folder, section), section
    different = {key for key in folder.data.model_fields if getattr(folder.data, key) != getattr(elpv.data, key)}
    assert {key for key in different if not key.startswith("elpv_")} == {"kind", "root"}
