"""Exceptions that form part of rayline's interface.

Every error a user can cause (a bad config, bad data, an unreachable service) is raised as a
subclass of :class:`RaylineError` whose message names what is wrong and how to fix it. The CLI
prints these messages without a traceback and exits non-zero.
"""

from __future__ import annotations


class RaylineError(Exception):
    """Base class for errors a user can act on."""


class ConfigError(RaylineError):
    """The config file or an override is invalid. Lists every problem at once."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid config{where} ({len(self.problems)} problem(s)):\n{lines}")


class DataSourceError(RaylineError):
    """Input data cannot be found or read (missing path, empty glob, corrupt file)."""


class DataValidationError(RaylineError):
    """Input data breaks the declared schema (missing or wrongly typed columns, too many bad rows)."""


class TrainingError(RaylineError):
    """Training or tuning failed (all trials errored, a worker failed past max_failures)."""


class NonFiniteLossError(TrainingError):
    """The training loss (or the weights) became NaN or infinite; the message names the
    epoch, step, value and likely causes. Deterministic: a restart would meet it again."""


class Interrupted(RaylineError):
    """The run was stopped (Ctrl-C, SIGTERM) before it finished; nothing was registered."""


class RegistryError(RaylineError):
    """The MLflow tracking server or model registry could not be used."""


class ClusterError(RaylineError):
    """Ray could not be started or reached, or a resource request cannot fit the cluster."""


def find_user_error(exc: BaseException) -> RaylineError | None:
    """The :class:`RaylineError` that ``exc`` wraps, if any, as a clean instance.

    Ray re-raises an exception from a task wrapped in ``RayTaskError`` (a subclass of both,
    whose text carries the remote traceback) and Ray Data may wrap that again. The user
    should see the original message, once, so the chain is walked to the innermost
    rayline error and a fresh one with its message is returned.
    """
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    found: RaylineError | None = None
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, RaylineError) and type(e).__module__ == __name__:
            found = e
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]
    if found is None:
        return None
    if isinstance(found, ConfigError):
        return found
    return type(found)(str(found.args[0]) if found.args else str(found))


class DeployError(RaylineError):
    """The Serve application could not be started or did not take the new champion."""


def internal_error_text(exc: BaseException) -> str:
    """What ``rayline`` and the job entry point print for an error rayline did not
    anticipate: its type and first line, and how to get the traceback."""
    text = str(exc).strip()
    return (
        f"internal error: {type(exc).__name__}: {text.splitlines()[0] if text else ''}\n"
        "rerun with --verbose for the traceback, and please report it"
    )
