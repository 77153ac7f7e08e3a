"""Loading a config: YAML, dotted ``key=value`` overrides, and validation.

:func:`load_config` reports every problem at once, each naming the key and the fix.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from rayline.config.pipeline import PipelineConfig
from rayline.errors import ConfigError


def _parse_override(text: str) -> tuple[list[str], Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError([f"override '{text}': expected dotted key=value, e.g. train.epochs=3"])
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(
            [
                f"override '{text}': the key '{key.strip()}' has an empty part; write dotted "
                "names without leading, trailing or doubled dots, e.g. train.epochs=3"
            ]
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError([f"override '{text}': value is not valid YAML ({exc})"]) from None
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each ``a.b.c=value`` override into ``data`` (values parsed as YAML)."""
    problems = []
    for text in overrides:
        try:
            path, value = _parse_override(text)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        # Search-space keys are themselves dotted (train.lr), so the two parts after
        # tune.search_space name one entry, not two nested sections.
        if path[:2] == ["tune", "search_space"] and len(path) >= 4:
            path = [*path[:2], ".".join(path[2:4]), *path[4:]]
        node = data
        for i, part in enumerate(path[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                problems.append(
                    f"override '{text}': '{'.'.join(path[: i + 1])}' is a value, not a section"
                )
                break
            node = nxt
        else:
            node[path[-1]] = value
    if problems:
        raise ConfigError(problems)
    return data


def _known_keys(model_cls: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model_cls.model_fields.items()]


def _format_error(err: dict[str, Any]) -> str:
    loc = [str(p) for p in err["loc"]]
    key = ".".join(loc) or "<root>"
    kind = err["type"]
    if kind == "extra_forbidden":
        parent = _parent_model(err["loc"][:-1])
        hint = ""
        if parent is not None:
            close = difflib.get_close_matches(loc[-1], _known_keys(parent), n=1)
            hint = (
                f"; did you mean '{close[0]}'?"
                if close
                else (f"; known keys here: {', '.join(_known_keys(parent))}")
            )
        return f"{key}: unknown key{hint} (remove it or fix the spelling)"
    if kind == "missing":
        return f"{key}: required but missing; add it to the config"
    if kind == "value_error":
        msg = str(err["msg"]).removeprefix("Value error, ")
        if not loc:
            return msg
        return "\n".join(f"{key}: {line}" for line in msg.split("\n"))
    got = err.get("input")
    got_txt = f" (got {got!r})" if not isinstance(got, dict | list) else ""
    return f"{key}: {err['msg']}{got_txt}"


def _parent_model(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    cls: Any = PipelineConfig
    i = 0
    while i < len(loc):
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
            return None
        part = loc[i]
        field = next((f for n, f in cls.model_fields.items() if part in (n, f.alias)), None)
        if field is None:
            return None
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        if getattr(ann, "__origin__", None) is dict and len(args) == 2:
            cls = args[1]
            i += 2  # skip the free-form dict key
            continue
        cls = ann
        i += 1
    return cls if isinstance(cls, type) and issubclass(cls, BaseModel) else None


def validate_config(data: dict[str, Any], source: str | None = None) -> PipelineConfig:
    """Validate plain data as a :class:`PipelineConfig`, reporting every problem at once."""
    if not isinstance(data, dict):
        raise ConfigError(["the config must be a YAML mapping of sections"], source)
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        problems: list[str] = []
        for err in exc.errors():
            problems.extend(_format_error(err).split("\n"))
        raise ConfigError(problems, source) from None


def load_config(path: str | os.PathLike[str], overrides: list[str] | None = None) -> PipelineConfig:
    """Load a YAML config, apply dotted ``key=value`` overrides, and validate it.

    Raises:
        ConfigError: the file is missing or not YAML, an override is malformed, or the
            result breaks any rule; the message lists every problem with its key.
    """
    p = Path(path)
    if p.is_dir():
        raise ConfigError([f"config file '{p}' is a directory; give the path of a YAML file"])
    if not p.is_file():
        raise ConfigError([f"config file '{p}' does not exist; check the path"])
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [
                f"not a text file: byte {exc.start} is not UTF-8 ({exc.reason}); a config "
                "is a YAML file saved as UTF-8 - check that the path names the config"
            ],
            str(p),
        ) from None
    except OSError as exc:
        raise ConfigError(
            [f"cannot read the file: {exc.strerror or exc}; check its permissions"], str(p)
        ) from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {exc}"], str(p)) from None
    if not isinstance(data, dict):
        raise ConfigError(["the config must be a YAML mapping of sections"], str(p))
    apply_overrides(data, list(overrides or []))
    return validate_config(data, str(p))
