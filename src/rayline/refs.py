"""References to user code: ``"pkg.module:name"`` strings in the config.

A user model builder (``model.builder``) and user transforms (``features.user``) are named
by one rule, checked by :func:`parse_ref`: a dotted module path, one colon, and an
attribute name, each part a Python identifier (``pkg.module:name``, or ``module:name`` for
a top-level module). The colon is required: a dotted ``pkg.module.name`` is not a
reference (``model.builder`` reads a bare word as a built-in builder name), so no call
site accepts that form.

Only the standard library is imported here: the registered MLflow model ships this file
and loads user builders and transforms through it where only torch and MLflow exist.
"""

from __future__ import annotations

import importlib
import importlib.util
import site
import sysconfig
from pathlib import Path
from typing import Any

FORM = "package.module:function"


class RefError(ValueError, ImportError):
    """A reference is malformed, or its module or attribute cannot be loaded.

    Both a :class:`ValueError` (what a bad model builder has always raised) and an
    :class:`ImportError` (what a user transform that cannot be imported has raised).
    """


def parse_ref(ref: str) -> tuple[str, str]:
    """``"pkg.module:name"`` -> ``("pkg.module", "name")``.

    Raises:
        RefError: ``ref`` does not follow the rule in the module docstring.
    """
    module, sep, attr = ref.partition(":")
    if not (sep and all(p.isidentifier() for p in module.split(".")) and attr.isidentifier()):
        raise RefError(f"'{ref}' is not an import path; write it as '{FORM}'")
    return module, attr


def is_ref(ref: str) -> bool:
    """Whether ``ref`` follows the ``pkg.module:name`` rule of :func:`parse_ref`."""
    try:
        parse_ref(ref)
    except RefError:
        return False
    return True


def load_ref(ref: str, what: str, *, signature: str | None = None) -> Any:
    """Import the module of ``ref`` and return its attribute.

    ``what`` names the reference's purpose in errors (e.g. ``"model builder"``);
    ``signature``, when given, is the shape the attribute must have (e.g.
    ``"(df) -> df"``), quoted in the hint when the attribute is missing.

    Raises:
        RefError: ``ref`` is malformed, its module cannot be imported (or raised while
            it ran), or the module lacks the attribute; the message names the reference,
            ``what`` it is for, and the fix.
    """
    try:
        module_name, attr = parse_ref(ref)
    except RefError:
        raise RefError(f"{what} '{ref}' is not an import path; write it as '{FORM}'") from None
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or any error raised while the module runs
        raise RefError(
            f"{what} '{ref}': cannot import module '{module_name}' "
            f"({type(exc).__name__}: {exc}); install it or put it on PYTHONPATH (on every Ray "
            "worker and in the serving environment), or fix the module name"
        ) from exc
    if not hasattr(module, attr):
        raise RefError(
            f"{what} '{ref}': module '{module_name}' has no attribute '{attr}'; "
            f"define {attr}{signature or ''} there or fix the name"
        )
    return getattr(module, attr)


def source_files(ref: str, what: str = "reference") -> list[str]:
    """Absolute paths of the user code ``ref`` imports, sorted.

    The module's file when it is a top-level module; every ``.py`` file of its top-level
    package when it lives in a package (a module may import its siblings). ``[]`` for
    rayline's own modules, the standard library and installed (site-packages) code, whose
    versions are not user code. ``[]`` too for a name without a colon, such as the built-in
    builder ``"mlp"``: it names no user code. The module is located, not run (a package's
    parents are not imported either).

    Raises:
        RefError: ``ref`` has a colon but is malformed, or its top-level module cannot be
            found.
    """
    if ":" not in ref:
        return []
    try:
        module_name, _ = parse_ref(ref)
    except RefError:
        raise RefError(f"{what} '{ref}' is not an import path; write it as '{FORM}'") from None
    top = module_name.split(".")[0]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError) as exc:
        spec, error = None, f" ({type(exc).__name__}: {exc})"
    else:
        error = ""
    if spec is None:
        raise RefError(
            f"{what} '{ref}': cannot find module '{top}'{error}; install it or put it on "
            "PYTHONPATH, or fix the module name"
        )
    if spec.submodule_search_locations is not None:  # a package, regular or namespace
        roots = [Path(p).resolve() for p in spec.submodule_search_locations]
        files = {f.resolve() for root in roots for f in root.rglob("*.py")}
    elif spec.origin and Path(spec.origin).is_file():
        roots = [Path(spec.origin).resolve()]
        files = set(roots)
    else:  # built-in or frozen: no file
        return []
    if any(_is_not_user_code(r) for r in roots):
        return []
    return sorted(str(f) for f in files)


def _not_user_roots() -> list[Path]:
    """rayline's package directory, the standard library and the site-packages dirs."""
    paths = sysconfig.get_paths()
    roots = [Path(__file__).resolve().parent]
    roots += [Path(paths[k]) for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths]
    roots += [Path(p) for p in site.getsitepackages()] if hasattr(site, "getsitepackages") else []
    roots.append(Path(site.getusersitepackages()))
    return [r.resolve() for r in roots]


def _is_not_user_code(path: Path) -> bool:
    if {"site-packages", "dist-packages"} & set(path.parts):
        return True
    return any(path == r or r in path.parents for r in _not_user_roots())
