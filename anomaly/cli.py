"""The `anomaly` command line. Heavy imports (torch, MLflow) happen inside commands that need them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from anomaly.errors import AnomalyError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@app.callback()
def cli() -> None:
    """Image anomaly detection with convolutional autoencoders."""

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="YAML config file.")]
SetOption = Annotated[
    Optional[list[str]], typer.Option("--set", help="Override a config key: --set model.depth=3 (repeatable).")
]
ExtraOverrides = Annotated[
    Optional[list[str]], typer.Argument(help="More key=value overrides, e.g. after --set: data.kind=folder data.root=DIR.")
]


def collect_overrides(options: list[str] | None, extra: list[str] | None) -> list[str]:
    overrides = [*(options or []), *(extra or [])]
    for item in overrides:
        if "=" not in item:
            raise AnomalyError(f"unexpected argument '{item}': overrides look like key.sub=value")
    return overrides


@app.command()
def train(config: ConfigOption, set_: SetOption = None, overrides: ExtraOverrides = None) -> None:
    """Train a model on normal images and record the run in MLflow."""
    from anomaly.config import load_config

    resolved = load_config(config, collect_overrides(set_, overrides))
    from anomaly.training.train import train as run_training

    result = run_training(resolved)
    typer.echo(f"mlflow run id: {result.run_id}")
    typer.echo(f"tracking uri: {result.tracking_uri}")
    typer.echo(f"checkpoint: {result.checkpoint}")
    typer.echo(f"best val loss: {result.best_val_loss:.6f} after {result.epochs} epochs")


def main() -> None:
    try:
        app()
    except AnomalyError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
