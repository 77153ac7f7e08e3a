"""What made a model: config hash, data fingerprint, code version, package versions."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path
from typing import Any

PACKAGES = (
    "rayline",
    "ray",
    "torch",
    "mlflow",
    "pyarrow",
    "pandas",
    "numpy",
    "pydantic",
    "scikit-learn",
)


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape a run's result."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_info(path: str | Path = ".") -> dict[str, Any]:
    """The git commit of ``path`` and whether the tree has uncommitted changes (or nulls)."""

    def git(*args: str) -> str | None:
        try:
            res = subprocess.run(
                ["git", *args], cwd=path, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return res.stdout.strip()

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status)}
