"""The config reference (Markdown) generated from the pydantic models; the README embeds it."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from rayline.config.pipeline import PipelineConfig


def _type_name(annotation: Any) -> str:
    text = repr(annotation) if not isinstance(annotation, type) else annotation.__name__
    for prefix in (
        "typing.",
        "rayline.config.sections.",
        "rayline.config.pipeline.",
        "rayline.config.",
    ):
        text = text.replace(prefix, "")
    return text.replace("NoneType", "None").replace("|", " \\| ")


def _default_text(field: Any) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, BaseModel):
            return "see below"
        return f"`{json.dumps(value)}`"
    return f"`{json.dumps(field.default)}`"


def config_reference() -> str:
    """The config reference as Markdown, generated from the pydantic models.

    The README embeds this text; a test checks that the two agree.
    """
    out: list[str] = []

    def section(title: str, cls: type[BaseModel]) -> None:
        out.append(f"### `{title}`\n")
        out.append((cls.__doc__ or "").strip() + "\n")
        out.append("| key | type | default | description |")
        out.append("|---|---|---|---|")
        nested: list[tuple[str, type[BaseModel]]] = []
        for name, f in cls.model_fields.items():
            key = f.alias or name
            ann = f.annotation
            out.append(
                f"| `{key}` | {_type_name(ann)} | {_default_text(f)} | {f.description or ''} |"
            )
            if isinstance(ann, type) and issubclass(ann, BaseModel) and title != "top level":
                nested.append((f"{title}.{key}", ann))
            args = getattr(ann, "__args__", ())
            if (
                getattr(ann, "__origin__", None) is dict
                and len(args) == 2
                and isinstance(args[1], type)
                and issubclass(args[1], BaseModel)
            ):
                nested.append((f"{title}.{key}.<name>", args[1]))
        out.append("")
        for t, c in nested:
            section(t, c)

    section("top level", PipelineConfig)
    for name, f in PipelineConfig.model_fields.items():
        if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel):
            section(f.alias or name, f.annotation)
    return "\n".join(out).rstrip() + "\n"
