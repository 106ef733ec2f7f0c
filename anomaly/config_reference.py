"""The configuration reference (docs/configuration.md), generated from the pydantic models' fields and descriptions
so the documentation cannot drift from the code:

    uv run python -m anomaly.config_reference > docs/configuration.md
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from anomaly.config import CodeDistance, Config, PatchDistance

HEADER = """# Configuration reference

Generated from `anomaly/config.py` by `uv run python -m anomaly.config_reference > docs/configuration.md`
(a test keeps it current). A run's config is a YAML file of these sections; `--set section.key=value` overrides
any key (values are read as YAML). Unknown keys are refused with their full path.
"""

LATENT_VARIANTS = {"code": CodeDistance, "patches": PatchDistance}


def type_text(annotation: Any) -> str:
    """A field's type as a reader wants it: `'a' | 'b'` for choices, `int | 'auto'`, `[int, int]`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(repr(arg) for arg in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(type_text(arg) for arg in args)
    if origin is tuple:
        return "[" + ", ".join(type_text(arg) for arg in args) + "]"
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(type_text(arg) for arg in args)}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def default_text(field: FieldInfo) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(value, BaseModel):
        return "(section)"
    return "null" if value is None else f"`{value}`"


def table(prefix: str, model: type[BaseModel], heading: str | None = None) -> list[str]:
    """One row per setting of `model` under `prefix`; nested sections get their own tables after it."""
    rows = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    nested: list[tuple[str, type[BaseModel], str | None]] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            nested.append((f"{prefix}.{name}", annotation, None))
            continue
        if name == "latent" and model.__name__ == "ScoringConfig":
            nested += [
                (f"{prefix}.latent", variant, f"`{prefix}.latent` with `kind: {kind}`")
                for kind, variant in LATENT_VARIANTS.items()
            ]
            continue
        meaning = " ".join((field.description or "").split())
        rows.append(f"| `{prefix}.{name}` | {type_text(annotation)} | {default_text(field)} | {meaning} |")
    lines = [f"## {heading or f'`{prefix}`'}", "", " ".join((model.__doc__ or "").split()), "", *rows, ""]
    for nested_prefix, nested_model, nested_heading in nested:
        lines += table(nested_prefix, nested_model, nested_heading)
    return lines


def render_reference() -> str:
    lines = [HEADER]
    for name, field in Config.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            lines += table(name, annotation)
    lines += [
        "## Top level",
        "",
        f"`output_dir` (default {default_text(Config.model_fields['output_dir'])}): where runs write their outputs.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render_reference(), end="")
