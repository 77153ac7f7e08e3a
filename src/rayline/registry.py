"""Everything MLflow: tracking runs, artifacts, the model registry and the champion alias.

This is the only module that talks to the tracking server (``serving.py`` only defines the
model that MLflow loads). Calls that fail because the server is down or misconfigured
surface as :class:`RegistryError` naming the URI.

Registration is built to survive a shared, flaky server:

- the calls that register a model (logging it, creating the version, tags, the alias) are
  retried a few times with exponential backoff on connection errors and 5xx answers
  (:meth:`Registry.call`; ``$RAYLINE_REGISTRY_RETRIES`` attempts, first wait
  ``$RAYLINE_REGISTRY_BACKOFF_S``), then fail with a :class:`RegistryError` naming the
  server and the fix;
- a version is registered only after its model was logged completely, and the alias moves
  only to a version whose status and logged model are ``READY``;
- a run registers at most one version: :meth:`Registry.find_version` finds the version an
  earlier attempt of the same MLflow run created, and it is reused;
- MLflow has no compare-and-set for aliases, so :meth:`Registry.move_alias` re-reads the
  alias right before moving it and reports a champion that changed since the gate read it
  (the caller gates again against the new one);
- every move of the alias is recorded as one tag on the version it moved to
  (``rayline.alias_moved.<alias>.<UTC time>``: who, when, from, to, why), and
  :meth:`Registry.alias_history` lists them in order.
"""

from __future__ import annotations

import getpass
import json
import logging
import math
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException, RestException

import rayline
from rayline.config import RegistryConfig
from rayline.errors import Interrupted, RegistryError
from rayline.lineage import package_versions
from rayline.paths import is_remote

log = logging.getLogger(__name__)

MAX_PARAM_LEN = 6000

#: Attempts per registry call while registering (connection errors and 5xx answers only).
RETRIES_ENV = "RAYLINE_REGISTRY_RETRIES"
DEFAULT_RETRIES = 3
#: Seconds before the first retry; each further retry waits twice as long.
BACKOFF_ENV = "RAYLINE_REGISTRY_BACKOFF_S"
DEFAULT_BACKOFF_S = 1.0
#: Test hook: a file path (``{run}`` is replaced by a label, e.g. the run name). Before the
#: alias is moved, rayline writes ``<path>.waiting`` and waits until ``<path>`` exists (at
#: most ``$RAYLINE_TEST_PAUSE_TIMEOUT_S``, 120 s), so a test can interleave two moves.
PAUSE_ENV = "RAYLINE_TEST_PAUSE_BEFORE_ALIAS"
PAUSE_TIMEOUT_ENV = "RAYLINE_TEST_PAUSE_TIMEOUT_S"
#: Tag key prefix of alias moves: ``rayline.alias_moved.<alias>.<YYYYmmddTHHMMSS.ffffffZ>``.
HISTORY_PREFIX = "rayline.alias_moved."
MAX_REASON_LEN = 2000
#: MLflow error codes of answers worth retrying (a server error, overload, rate limit).
_TRANSIENT_CODES = {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"}
_AUTH_VARS = "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"

T = TypeVar("T")


def resolve_tracking_uri(cfg: RegistryConfig, storage_path: str) -> str:
    """Config, else ``$MLFLOW_TRACKING_URI``, else a sqlite file under the storage path."""
    if cfg.tracking_uri:
        return cfg.tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if is_remote(storage_path):
        raise RegistryError(
            f"runtime.storage_path is '{storage_path}' (remote), so the default local sqlite "
            "tracking store does not apply; set registry.tracking_uri or MLFLOW_TRACKING_URI "
            "to your MLflow server"
        )
    return f"sqlite:///{Path(storage_path).resolve()}/mlflow.db"


_URI_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


def use_mlflow(tracking_uri: str) -> None:
    """Point this process's MLflow client at ``tracking_uri`` (tracking and registry).

    ``mlflow.set_tracking_uri`` also exports ``$MLFLOW_TRACKING_URI`` (and the registry one)
    for subprocesses. Left set, a later pipeline in the same process (a test session, a
    retrain loop, a notebook) would take it for the user's choice and use the first run's
    store instead of its own default under its storage path; so the user's values are put
    back.
    """
    before = {k: os.environ.get(k) for k in _URI_ENV}
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def load_pyfunc(uri: str, tracking_uri: str):
    """Load a registered model (``models:/name@alias``) in any process, e.g. a Ray actor."""
    use_mlflow(tracking_uri)
    return mlflow.pyfunc.load_model(uri)


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def _numeric(metrics: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


# -- failures: which are worth retrying, which are a login problem --------------------------
def is_transient(exc: BaseException) -> bool:
    """A connection error, a timeout or a 5xx / 429 answer: worth another attempt.

    MLflow raises these as :class:`MlflowException` whose text says "failed with exception"
    (the connection) or names the HTTP status (a non-JSON answer), or as a
    :class:`RestException` with a server-side error code. Anything else (a bad request, a
    missing model, a refused login) would fail the same way again.
    """
    import requests

    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return True
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    if not isinstance(exc, MlflowException):
        return False
    text = str(exc)
    if isinstance(exc, RestException):
        return exc.error_code in _TRANSIENT_CODES
    if re.search(r"failed with (timeout )?exception", text):
        return True
    return bool(re.search(r"failed with error code (5\d\d|429)\b", text))


def auth_problem(exc: BaseException) -> str | None:
    """``"login"`` (401) or ``"permission"`` (403) when the server refused the request."""
    if not isinstance(exc, MlflowException):
        return None
    code, text = exc.error_code, str(exc)
    if code == "UNAUTHENTICATED" or "error code 401" in text:
        return "login"
    if code == "PERMISSION_DENIED" or "error code 403" in text:
        return "permission"
    return None


def auth_message(uri: str, kind: str) -> str:
    """What to tell the user when the server at ``uri`` refused a login or a permission.

    Names the variables, never their values.
    """
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if kind == "permission":
        return (
            f"the MLflow server at '{uri}' refused the request: user '{user or '?'}' lacks the "
            "permission; ask an MLflow admin to grant it (e.g. MANAGE on the experiment and the "
            "registered model)"
        )
    if user and os.environ.get("MLFLOW_TRACKING_PASSWORD"):
        return (
            f"the MLflow server at '{uri}' refused the login of user '{user}' from "
            f"{_AUTH_VARS}; check the user name and password"
        )
    return (
        f"the MLflow server at '{uri}' requires a login and none was given: set {_AUTH_VARS} "
        "(or MLFLOW_TRACKING_TOKEN for a token) in the environment"
    )


def _no_such_alias(exc: MlflowException) -> bool:
    """A lookup of ``name@alias`` failed because the model or the alias does not exist.

    A local store says "not found"/"does not exist"; a server answers
    ``RESOURCE_DOES_NOT_EXIST`` for a missing model and ``INVALID_PARAMETER_VALUE``
    ("Registered model alias X not found") for a missing alias.
    """
    text = str(exc).lower()
    if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
        return True
    if isinstance(exc, RestException):
        return (
            exc.error_code == "INVALID_PARAMETER_VALUE" and "alias" in text and "not found" in text
        )
    return "not found" in text or "does not exist" in text


# -- the alias history: one tag per move on the version moved to ------------------------------
def who() -> str:
    """The user moving the alias (login name, else ``$USER``)."""
    try:
        return getpass.getuser()
    except Exception:  # no login name (a container without a passwd entry)
        return os.environ.get("USER") or "unknown"


def history_tag(
    alias: str,
    to_version: str,
    from_version: str | None,
    reason: str,
    action: str,
    by: str | None = None,
    at: datetime | None = None,
) -> tuple[str, str]:
    """The tag ``(key, value)`` that records one move of ``alias`` (on ``to_version``).

    The key carries the UTC time to the microsecond, so every move is its own tag (MLflow
    caps a tag's length; one growing tag would be cut) and keys sort in time order.
    """
    at = at or datetime.now(timezone.utc)
    record = {
        "alias": alias,
        "from": from_version,
        "to": str(to_version),
        "by": by or who(),
        "at": at.isoformat(timespec="microseconds"),
        "reason": (reason or "")[:MAX_REASON_LEN],
        "action": action,
    }
    return f"{HISTORY_PREFIX}{alias}.{at:%Y%m%dT%H%M%S.%fZ}", json.dumps(record)


def parse_history(versions: Iterable[tuple[str, dict[str, str]]], alias: str) -> list[dict]:
    """The moves of ``alias`` recorded in version tags, oldest first.

    Args:
        versions: ``(version, tags)`` of every version of the model.
    """
    prefix = f"{HISTORY_PREFIX}{alias}."
    moves = []
    for version, tags in versions:
        for key, value in (tags or {}).items():
            if not key.startswith(prefix):
                continue
            try:
                record = json.loads(value)
            except ValueError:
                continue  # a tag someone else wrote under our prefix
            if not isinstance(record, dict):
                continue
            record.setdefault("to", str(version))
            record.setdefault("alias", alias)
            record["key"] = key
            moves.append(record)
    return sorted(moves, key=lambda m: (str(m.get("at", "")), m["key"]))


def champion_stack(history: list[dict]) -> list[str]:
    """The champions in order, replaying the history: a rollback pops, any other move pushes.

    The last entry is the champion the history ends on; the one before it is the one
    ``rayline rollback`` returns to.
    """
    stack: list[str] = []
    for move in history:
        to = str(move.get("to"))
        if move.get("action") == "rollback":
            while stack and stack[-1] != to:
                stack.pop()
            if not stack:
                stack.append(to)
        elif not stack or stack[-1] != to:
            stack.append(to)
    return stack


def rollback_target(history: list[dict], current: str | None) -> str | None:
    """The version ``rayline rollback`` moves the alias to, or None when there is none.

    That is the champion before the current one. If the alias was moved outside rayline
    (the current version is not the last one the history recorded), it is the last
    champion rayline recorded.
    """
    stack = champion_stack(history)
    if current is not None and stack and stack[-1] != str(current):
        return stack[-1]
    return stack[-2] if len(stack) >= 2 else None


@dataclass(frozen=True)
class AliasMove:
    """What :meth:`Registry.move_alias` did.

    Attributes:
        moved: The alias now points at the version asked for.
        current: The version the alias pointed at when re-read (before the move).
        expected: The version the caller's gate decision was taken against.
    """

    moved: bool
    current: str | None
    expected: str | None

    @property
    def stale(self) -> bool:
        """The champion changed since the caller's gate read it: gate again against it."""
        return not self.moved and self.current != self.expected


def pause_before_alias(label: str) -> None:
    """The test hook of :data:`PAUSE_ENV`: wait for its file before an alias move."""
    template = os.environ.get(PAUSE_ENV)
    if not template:
        return
    path = Path(template.replace("{run}", label))
    timeout = float(os.environ.get(PAUSE_TIMEOUT_ENV, "120"))
    path.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{path}.waiting").write_text(label)
    log.info("%s: waiting for %s before moving the alias", PAUSE_ENV, path)
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise RegistryError(
                f"{PAUSE_ENV}: {path} did not appear within {timeout:g} s ({PAUSE_TIMEOUT_ENV}); "
                "this is a test hook: unset it outside tests"
            )
        time.sleep(0.05)


def _quote(value: str) -> str:
    """A string literal for an MLflow search filter."""
    value = str(value)
    return f'"{value}"' if "'" in value else f"'{value}'"


class Registry:
    """MLflow tracking and model registry for one pipeline."""

    def __init__(self, cfg: RegistryConfig, storage_path: str):
        self.cfg = cfg
        self.tracking_uri = resolve_tracking_uri(cfg, storage_path)
        self._uri_given = bool(cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"))
        self.storage_path = storage_path
        try:
            if self.tracking_uri.startswith("sqlite:///"):
                # MLflow opens the database file when the client is made: its directory first.
                Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(
                    parents=True, exist_ok=True
                )
            use_mlflow(self.tracking_uri)
            self.client = MlflowClient(self.tracking_uri, self.tracking_uri)
        except (MlflowException, OSError) as exc:
            raise self._unusable(exc) from None
        self.experiment_id: str | None = None

    def _unusable(self, exc: Exception) -> RegistryError:
        """The error for a tracking store MLflow cannot open or reach, with the fix."""
        kind = auth_problem(exc)
        if kind:
            return RegistryError(auth_message(self.tracking_uri, kind))
        if self._uri_given:
            fix = (
                "Check registry.tracking_uri / MLFLOW_TRACKING_URI (e.g. http://host:5000, "
                "sqlite:////abs/path/mlflow.db) and that the server is running "
                "(`mlflow server ...`)."
            )
        else:
            fix = (
                f"This is the default store under runtime.storage_path ('{self.storage_path}'); "
                "point runtime.storage_path at a directory this user can write, or set "
                "registry.tracking_uri."
            )
        return RegistryError(
            f"cannot use the MLflow tracking store at '{self.tracking_uri}': {_short(exc)}. {fix}"
        )

    # -- connection ----------------------------------------------------------------------------
    def connect(self) -> None:
        """Reach the tracking store and get or create the experiment, failing fast.

        Raises:
            RegistryError: the store cannot be reached or used.
        """
        # Fail in seconds, not after MLflow's default minutes of retries.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        try:
            exp = self.client.get_experiment_by_name(self.cfg.experiment)
            if exp is None:
                location = None
                if not is_remote(self.storage_path) and not self.tracking_uri.startswith("http"):
                    location = Path(self.storage_path, "mlartifacts").resolve().as_uri()
                self.experiment_id = self.client.create_experiment(
                    self.cfg.experiment, artifact_location=location
                )
            else:
                self.experiment_id = exp.experiment_id
        except (MlflowException, OSError) as exc:
            raise self._unusable(exc) from None
        mlflow.set_experiment(experiment_id=self.experiment_id)

    # -- runs ----------------------------------------------------------------------------------
    @contextmanager
    def run(
        self, run_name: str, tags: dict[str, str], resume_run_id: str | None = None
    ) -> Iterator[str]:
        """The parent run of one pipeline run; ends FAILED if the body raises.

        ``resume_run_id``: a rerun of the same pipeline run continues that MLflow run (its
        nested trial runs stay under it) instead of starting another.
        """
        if resume_run_id:
            try:
                self.client.get_run(resume_run_id)
            except MlflowException:
                resume_run_id = None  # gone (another tracking store?): start afresh
        try:
            active = (
                mlflow.start_run(run_id=resume_run_id)
                if resume_run_id
                else mlflow.start_run(
                    run_name=run_name, tags=tags, experiment_id=self.experiment_id
                )
            )
        except MlflowException as exc:
            raise RegistryError(
                f"cannot start an MLflow run at '{self.tracking_uri}': {_short(exc)}"
            ) from None
        try:
            yield active.info.run_id
        except (KeyboardInterrupt, Interrupted):
            self._end_failed("KILLED")
            raise
        except BaseException:
            self._end_failed("FAILED")
            raise
        mlflow.end_run(status="FINISHED")

    def _end_failed(self, status: str) -> None:
        """End the active run as failed; a server that is gone must not hide the real error."""
        try:
            mlflow.end_run(status=status)
        except Exception as exc:  # the run stays RUNNING in MLflow; a rerun resumes it
            log.warning(
                "could not mark the MLflow run %s at %s: %s", status, self.tracking_uri, _short(exc)
            )

    def log_params(self, params: dict[str, Any]) -> None:
        """Log flat params (keys made MLflow-safe, long values cut to MLflow's limit)."""
        items = {_safe_key(k): _param_text(v) for k, v in params.items()}
        keys = list(items)
        for i in range(0, len(keys), 100):  # MLflow takes at most 100 params per batch
            mlflow.log_params({k: items[k] for k in keys[i : i + 100]})

    def log_metrics(
        self, metrics: dict[str, Any], prefix: str = "", step: int | None = None
    ) -> None:
        """Log the finite numeric entries of ``metrics``, names prefixed."""
        values = {f"{prefix}{k}": v for k, v in _numeric(metrics).items()}
        if values:
            mlflow.log_metrics(values, step=step)

    def log_history(self, history: list[dict[str, Any]], run_id: str | None = None) -> None:
        """Per-epoch training metrics, with the epoch as the step."""
        for row in history:
            step = int(row.get("epoch") or row.get("training_iteration") or 0)
            values = {
                k: v
                for k, v in _numeric(row).items()
                if k.startswith(("train_", "val_")) or k == "epoch"
            }
            if run_id:
                for k, v in values.items():
                    self.client.log_metric(run_id, k, v, step=step)
            elif values:
                mlflow.log_metrics(values, step=step)

    def log_step_history(self, rows: list[dict[str, Any]]) -> None:
        """Step-level training metrics as ``step.<name>``, with the global step as the step."""
        for row in rows:
            values = {
                f"step.{k}": v
                for k, v in _numeric(row).items()
                if k in ("train_loss", "lr", "samples_per_s")
            }
            if values:
                mlflow.log_metrics(values, step=int(row["global_step"]))

    def finish_trials(self, trials: list[Any], parent_run_id: str) -> None:
        """After a sweep logged live (``SweepProgress``): tag failed trials' runs with their
        error; a trial whose run is missing (MLflow was down meanwhile) is logged whole."""
        for t in trials:
            found = self.client.search_runs(
                [self.experiment_id],
                f"tags.mlflow.parentRunId = '{parent_run_id}' "
                f"and tags.rayline.trial_id = '{t.trial_id}'",
                max_results=1,
            )
            if not found:
                self.log_trials([t], parent_run_id)
            elif t.error:
                self.client.set_tag(found[0].info.run_id, "rayline.error", t.error[:5000])

    def log_trials(self, trials: list[Any], parent_run_id: str) -> None:
        """One nested run per Tune trial: sampled params, per-epoch metrics, status."""
        for t in trials:
            run = self.client.create_run(
                self.experiment_id,
                run_name=f"trial-{t.trial_id}",
                tags={"mlflow.parentRunId": parent_run_id, "rayline.trial_id": t.trial_id},
            )
            rid = run.info.run_id
            for k, v in t.params.items():
                self.client.log_param(rid, k, _param_text(v))
            self.log_history(t.history, run_id=rid)
            if t.error:
                self.client.set_tag(rid, "rayline.error", t.error[:5000])
            self.client.set_terminated(rid, status="FAILED" if t.error else "FINISHED")

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Tag the active (parent) run."""
        if tags:
            mlflow.set_tags({_safe_key(k): _param_text(v) for k, v in tags.items()})

    def log_json(self, data: Any, name: str) -> None:
        """Log ``data`` as a JSON artifact named ``name``."""
        mlflow.log_dict(data, name)

    def log_text(self, text: str, name: str) -> None:
        """Log ``text`` as an artifact named ``name`` (e.g. the model card)."""
        mlflow.log_text(text, name)

    def log_file(self, path: str, artifact_path: str | None = None) -> None:
        """Log a local file as an artifact."""
        mlflow.log_artifact(path, artifact_path)

    def log_datasets(
        self,
        name: str,
        fingerprint: str,
        source_uris: list[str],
        schemas: dict[str, Any],
        rows: dict[str, int] | None = None,
    ) -> None:
        """Log each split as an MLflow dataset input of the active run (its Datasets panel).

        One ``MetaDataset`` (metadata, no rows) per entry of ``schemas`` (split -> its staged
        ``pyarrow.Schema``, or None for an empty split), named ``<name>-<split>``, with the
        context ``training`` / ``validation`` / ``testing`` for train / val / test. The digest
        is the data fingerprint cut to MLflow's 36 characters (every split shares it: the
        split is in the name); the full one and the split's row count are input tags. The
        source is the MLflow source type for the files' location (``local``, ``s3``, ...):
        its ``uri`` is the deepest directory holding every input file (the file itself when
        there is one) and ``uris`` lists the first 100 files (``files`` counts them all).
        """
        import mlflow.data.dataset_source_registry as sources
        import pyarrow as pa
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.types.schema import AnyType, ColSpec, DataType, Schema

        kinds = (
            (pa.types.is_boolean, DataType.boolean),
            (lambda t: pa.types.is_signed_integer(t) and t.bit_width <= 32, DataType.integer),
            (pa.types.is_integer, DataType.long),
            (pa.types.is_float64, DataType.double),
            (pa.types.is_floating, DataType.float),
            (lambda t: pa.types.is_string(t) or pa.types.is_large_string(t), DataType.string),
            (lambda t: pa.types.is_binary(t) or pa.types.is_large_binary(t), DataType.binary),
            (lambda t: pa.types.is_timestamp(t) or pa.types.is_date(t), DataType.datetime),
        )

        def spec(field: pa.Field) -> ColSpec:
            t = field.type.value_type if pa.types.is_dictionary(field.type) else field.type
            kind = next((k for test, k in kinds if test(t)), AnyType())
            return ColSpec(kind, field.name, required=not field.nullable)

        uris = list(source_uris)
        if not uris or not schemas:
            return
        where = uris[0] if len(uris) == 1 else os.path.commonprefix(uris).rpartition("/")[0]
        scheme = uris[0].partition("://")[0] + "://" if "://" in uris[0] else ""
        if len(where) < len(scheme):  # files in different buckets: the scheme alone
            where = scheme
        try:
            with warnings.catch_warnings():  # "can be interpreted in multiple ways" (local)
                warnings.simplefilter("ignore", UserWarning)
                base = type(sources.resolve_dataset_source(where or "/"))
        except MlflowException as exc:
            log.warning("splits not logged as MLflow datasets: %s", _short(exc))
            return

        class Files(base):  # the resolved source, plus the files it stands for
            def to_dict(self) -> dict[str, Any]:
                return {**super().to_dict(), "uris": uris[:100], "files": len(uris)}

        contexts = {"train": "training", "val": "validation", "test": "testing"}
        splits = list(schemas)
        mlflow.log_inputs(
            datasets=[
                MetaDataset(
                    Files(where or "/"),
                    name=f"{name}-{split}",
                    digest=fingerprint[:36],
                    schema=Schema([spec(f) for f in schemas[split]]) if schemas[split] else None,
                )
                for split in splits
            ],
            contexts=[contexts.get(split, split) for split in splits],
            tags_list=[
                {
                    "rayline.data_fingerprint": fingerprint,
                    **({"rayline.rows": str(rows[split])} if rows and split in rows else {}),
                }
                for split in splits
            ],
        )

    # -- models --------------------------------------------------------------------------------
    def log_model(
        self,
        preprocessor_json: str,
        model_spec: dict[str, Any],
        weights_path: str,
        input_example: pd.DataFrame,
        output_example: pd.DataFrame,
    ) -> str:
        """Log the pyfunc model (models-from-code, no pickles); return its model URI."""
        import torch

        package_dir = Path(rayline.__file__).parent
        versions = package_versions()
        with tempfile.TemporaryDirectory() as tmp:
            prep_path = Path(tmp, "preprocessor.json")
            prep_path.write_text(preprocessor_json)
            spec_path = Path(tmp, "model_spec.json")
            spec_path.write_text(json.dumps(model_spec, indent=2))
            info = self.call(
                "logging the model",
                mlflow.pyfunc.log_model,
                name="model",
                python_model=str(package_dir / "serving.py"),
                artifacts={
                    "preprocessor": str(prep_path),
                    "model_spec": str(spec_path),
                    "weights": weights_path,
                },
                # Ship rayline's own code with the model so that it loads where rayline is
                # not installed; its dependencies are plain torch/numpy/pandas.
                code_paths=[
                    str(package_dir),
                    *_user_code_paths(model_spec, json.loads(preprocessor_json).get("user", [])),
                ],
                signature=_signature(model_spec, input_example, output_example),
                input_example=input_example,
                pip_requirements=[
                    f"torch=={torch.__version__.split('+')[0]}",
                    f"mlflow=={versions['mlflow']}",
                    f"numpy=={versions['numpy']}",
                    f"pandas=={versions['pandas']}",
                ],
            )
        return info.model_uri

    def register(
        self,
        model_uri: str,
        name: str,
        tags: dict[str, Any],
        description: str | None = None,
    ) -> str:
        """Register ``model_uri`` as a new version of ``name``; return the version.

        Call it only after :meth:`log_model` returned: the version then points at a model
        whose artifacts are all uploaded. A version that an earlier attempt of the same
        MLflow run created (tag ``rayline.mlflow_run_id``) is reused instead of making a
        second one, also when the answer to the create was lost on the way back.

        Args:
            description: The version's description (Markdown, shown by the MLflow UI).
        """
        run_id = str(tags.get("rayline.mlflow_run_id") or "") or None
        text_tags = {k: _param_text(v) for k, v in tags.items()}

        def find_or_create() -> str:
            found = self.find_version(name, run_id) if run_id else None
            if found is not None:
                return found
            mv = mlflow.register_model(model_uri, name, tags=text_tags)
            return str(mv.version)

        version = self._registering(f"registering model '{name}'", find_or_create)
        self.set_version_tags(name, version, tags)
        if description is not None:
            self.describe(name, version, description)
        return version

    def describe(self, name: str, version: str, description: str) -> None:
        """Set a version's description (the model card)."""
        self._registering(
            f"describing {name} v{version}",
            self.client.update_model_version,
            name,
            version,
            description=description,
        )

    def find_version(self, name: str, run_id: str) -> str | None:
        """The version of ``name`` registered by MLflow run ``run_id`` (the first, if several).

        Looked up by the version's run id and by its ``rayline.mlflow_run_id`` tag.
        """

        def search() -> list:
            try:
                found = list(
                    self.client.search_model_versions(
                        f"name = {_quote(name)} and run_id = {_quote(run_id)}"
                    )
                )
                found += self.client.search_model_versions(
                    f"name = {_quote(name)} and tags.`rayline.mlflow_run_id` = {_quote(run_id)}"
                )
            except MlflowException as exc:
                if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                    return []
                raise
            return found

        found = self._registering(f"looking up the versions of '{name}'", search)
        versions = sorted({int(v.version) for v in found})
        return str(versions[0]) if versions else None

    def set_version_tags(self, name: str, version: str, tags: dict[str, Any]) -> None:
        """Tag a model version (e.g. with the gate decision)."""
        for k, v in tags.items():
            self._registering(
                f"tagging {name} v{version}",
                self.client.set_model_version_tag,
                name,
                version,
                k,
                _param_text(v),
            )

    def referenced_runs(self) -> set[str]:
        """Names of the pipeline runs that registered model versions were made by."""
        names: set[str] = set()
        token = None
        while True:
            page = self.client.search_model_versions(max_results=1000, page_token=token)
            names |= {v.tags["rayline.run_name"] for v in page if "rayline.run_name" in v.tags}
            token = page.token
            if not token:
                return names

    def champion(self, name: str) -> tuple[str, str] | None:
        """``(version, uri)`` of the model holding the configured alias, or None."""
        version = self.alias_version(name)
        return None if version is None else (version, f"models:/{name}@{self.cfg.alias}")

    def alias_version(self, name: str, alias: str | None = None) -> str | None:
        """The version ``name@alias`` points at now, or None (no such model or alias)."""
        alias = alias or self.cfg.alias

        def read() -> str | None:
            try:
                return str(self.client.get_model_version_by_alias(name, alias).version)
            except MlflowException as exc:
                # Only "no such model/alias" means there is no champion. Any other failure
                # must not read as "no champion": the gate would then promote on thresholds
                # alone.
                if _no_such_alias(exc):
                    return None
                raise

        return self._registering(f"looking up {name}@{alias}", read)

    def version_artifact_text(self, name: str, version: str, artifact_path: str) -> str | None:
        """Text of an artifact of the run that produced a model version, or None if absent.

        The version's ``rayline.mlflow_run_id`` tag names the pipeline run; versions
        registered before profiles existed have no profile, which is not an error.
        """
        import mlflow.artifacts

        mv = self.client.get_model_version(name, version)
        run_id = (mv.tags or {}).get("rayline.mlflow_run_id")
        if not run_id:
            return None
        try:
            with tempfile.TemporaryDirectory() as tmp:
                local = mlflow.artifacts.download_artifacts(
                    run_id=run_id,
                    artifact_path=artifact_path,
                    dst_path=tmp,
                    tracking_uri=self.tracking_uri,
                )
                return Path(local).read_text()
        except (MlflowException, OSError):
            return None

    def promote(self, name: str, version: str, reason: str = "", action: str = "promote") -> None:
        """Point the alias at ``version`` whatever it points at now, and record the move."""
        self.move_alias(name, version, None, reason, action=action, check_expected=False)

    def move_alias(
        self,
        name: str,
        version: str,
        expected_from: str | None,
        reason: str,
        action: str = "pipeline",
        alias: str | None = None,
        check_expected: bool = True,
    ) -> AliasMove:
        """Move ``name@alias`` to ``version`` if it still points at ``expected_from``.

        MLflow has no compare-and-set for aliases: the alias is re-read right before the
        move, and when it no longer points at ``expected_from`` (the champion the caller's
        gate compared with) nothing is moved and the result is ``stale``: gate again
        against ``result.current``. A short window between the re-read and the move
        remains; the history records both moves if two writers hit it.

        The version must be complete (:meth:`check_ready`). The move is recorded on
        ``version`` as a ``rayline.alias_moved.<alias>.<time>`` tag: who, when, from, to,
        why (``reason``) and how (``action``: pipeline, promote, promote --force,
        rollback).

        Raises:
            RegistryError: the version is not complete, or the server failed past retries.
        """
        alias = alias or self.cfg.alias
        version = str(version)
        self.check_ready(name, version)
        current = self.alias_version(name, alias)
        expected = None if expected_from is None else str(expected_from)
        if check_expected and current != expected:
            return AliasMove(False, current, expected)
        if current == version:
            return AliasMove(True, current, expected)
        self._registering(
            f"moving {name}@{alias} to v{version}",
            self.client.set_registered_model_alias,
            name,
            alias,
            version,
        )
        key, value = history_tag(alias, version, current, reason, action)
        try:
            self._registering(
                f"recording the move of {name}@{alias}",
                self.client.set_model_version_tag,
                name,
                version,
                key,
                value,
            )
        except RegistryError as exc:
            raise RegistryError(
                f"{name}@{alias} now points at v{version}, but the record of the move could not "
                f"be written: {exc}"
            ) from None
        log.info("%s@%s: v%s -> v%s (%s)", name, alias, current, version, action)
        return AliasMove(True, current, expected)

    def check_ready(self, name: str, version: str) -> None:
        """Refuse a version that is not ``READY`` or whose logged model is incomplete.

        MLflow 3 registers a version from a logged model (``models:/m-<id>``), which is
        ``READY`` only once all its artifacts were uploaded (``FAILED`` if the upload broke
        off).
        """
        mv = self.model_version(name, version)
        status = str(getattr(mv.status, "name", mv.status))
        if status != "READY":
            raise RegistryError(
                f"{name} v{version} is {status}, not READY ({mv.status_message or 'no message'}); "
                "the alias is not moved to it"
            )
        source = str(mv.source or "")
        if source.startswith("models:/m-"):
            model_id = source.removeprefix("models:/").split("/", 1)[0]
            logged = self._registering(
                f"checking the logged model of {name} v{version}",
                self.client.get_logged_model,
                model_id,
            )
            state = str(getattr(logged.status, "name", logged.status)).split(".")[-1]
            if state != "READY":
                raise RegistryError(
                    f"{name} v{version}: its logged model {model_id} is {state}, not READY (its "
                    "artifacts are incomplete); the alias is not moved to it"
                )

    def model_version(self, name: str, version: str):
        """One version (MLflow ``ModelVersion``).

        Raises:
            RegistryError: no model ``name`` or no such version of it.
        """

        def get():
            try:
                return self.client.get_model_version(name, str(version))
            except MlflowException as exc:
                if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                    self.registered_model(name)  # says so when the model itself is missing
                    raise RegistryError(
                        f"model '{name}' has no version '{version}' at '{self.tracking_uri}' "
                        f"(`rayline models list {name}` lists them)"
                    ) from None
                raise

        return self._registering(f"reading {name} v{version}", get)

    def registered_model(self, name: str):
        """The registered model (MLflow ``RegisteredModel``).

        Raises:
            RegistryError: there is no model ``name``.
        """

        def get():
            try:
                return self.client.get_registered_model(name)
            except MlflowException as exc:
                if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                    raise RegistryError(
                        f"no registered model '{name}' at '{self.tracking_uri}'; check the name "
                        "and --tracking-uri"
                    ) from None
                raise

        return self._registering(f"reading model '{name}'", get)

    def aliases(self, name: str) -> dict[str, list[str]]:
        """Version -> its aliases (a search of versions does not return them)."""
        out: dict[str, list[str]] = {}
        for alias, version in (self.registered_model(name).aliases or {}).items():
            out.setdefault(str(version), []).append(alias)
        return out

    def versions(self, name: str) -> list:
        """Every version of ``name``, newest first.

        Raises:
            RegistryError: there is no model ``name``.
        """
        self.registered_model(name)
        out: list = []
        token = None
        while True:
            page = self._registering(
                f"listing the versions of '{name}'",
                self.client.search_model_versions,
                f"name = {_quote(name)}",
                max_results=1000,
                page_token=token,
            )
            out.extend(page)
            token = page.token
            if not token:
                return sorted(out, key=lambda v: int(v.version), reverse=True)

    def alias_history(self, name: str, alias: str | None = None) -> list[dict]:
        """Every recorded move of ``name@alias``, oldest first.

        Each is a dict: ``alias``, ``from``, ``to`` (versions; ``from`` None for the first
        champion), ``by``, ``at`` (UTC ISO 8601), ``reason``, ``action``, ``key`` (the tag).
        """
        alias = alias or self.cfg.alias
        return parse_history(((str(v.version), v.tags) for v in self.versions(name)), alias)

    # -- retries -------------------------------------------------------------------------------
    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)``, retried on connection errors and 5xx answers.

        ``$RAYLINE_REGISTRY_RETRIES`` attempts (3), waiting ``$RAYLINE_REGISTRY_BACKOFF_S``
        (1 s), then twice as long before each next one. ``what`` names the call in messages.

        Raises:
            RegistryError: the server refused the login, or did not answer past the retries.
        """
        attempts = max(1, int(os.environ.get(RETRIES_ENV, DEFAULT_RETRIES)))
        wait = max(0.0, float(os.environ.get(BACKOFF_ENV, DEFAULT_BACKOFF_S)))
        for attempt in range(1, attempts + 1):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                kind = auth_problem(exc)
                if kind:
                    raise RegistryError(
                        f"{what}: {auth_message(self.tracking_uri, kind)}"
                    ) from None
                if not is_transient(exc):
                    raise
                if attempt == attempts:
                    raise RegistryError(
                        f"{what}: the MLflow tracking server at '{self.tracking_uri}' did not "
                        f"answer after {attempts} attempts ({_short(exc)}). Check that the server "
                        "is running and reachable from here (registry.tracking_uri / "
                        "MLFLOW_TRACKING_URI), then run again: a pipeline run under the same "
                        "runtime.run_name resumes and reuses the version it already registered"
                    ) from None
                pause = wait * 2 ** (attempt - 1)
                log.warning(
                    "%s: MLflow at %s failed (%s); attempt %d of %d in %.1f s",
                    what,
                    self.tracking_uri,
                    _short(exc),
                    attempt + 1,
                    attempts,
                    pause,
                )
                time.sleep(pause)
        raise AssertionError("unreachable")

    def _registering(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """:meth:`call`, with any other MLflow failure as a :class:`RegistryError` too."""
        try:
            return self.call(what, fn, *args, **kwargs)
        except MlflowException as exc:
            raise RegistryError(f"{what} at '{self.tracking_uri}': {_short(exc)}") from None


def _signature(
    model_spec: dict[str, Any], input_example: pd.DataFrame, output_example: pd.DataFrame
):
    """Required input columns by name; numeric ones typed ``any``.

    MLflow refuses int64 for a double column, float64 (an int column with a missing value)
    for a long one, and pandas' nullable Int64 for either, so strict numeric types would
    reject ordinary inputs. The model parses numbers itself and rejects what does not parse.
    """
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    with warnings.catch_warnings():
        # Its hint about integer columns and missing values is what `any` below addresses.
        warnings.simplefilter("ignore", UserWarning)
        inferred = infer_signature(input_example, output_example)
    cols = []
    for spec in inferred.inputs.inputs:
        kind = str(spec.type)
        numeric = any(t in kind for t in ("long", "integer", "double", "float", "boolean"))
        cols.append(ColSpec(AnyType() if numeric else spec.type, spec.name))
    return ModelSignature(inputs=Schema(cols), outputs=inferred.outputs)


def _user_code_paths(model_spec: dict[str, Any], feature_fns: list[str] = ()) -> list[str]:
    """The top-level packages (or module files) of user code the model calls: a
    ``pkg.module:function`` model builder and ``features.user`` transforms.

    Shipped with the model so that it loads where only MLflow and torch are installed.
    """
    import importlib

    paths: list[str] = []
    for ref in [str(model_spec.get("builder", "")), *feature_fns]:
        if ":" not in ref:
            continue
        top = importlib.import_module(ref.split(":", 1)[0].split(".")[0])
        path = Path(top.__file__ or "")
        where = str(path.parent if path.name == "__init__.py" else path)
        if where not in paths and where != str(Path(rayline.__file__).parent):
            paths.append(where)
    return paths


def _safe_key(key: str) -> str:
    """MLflow names allow letters, digits and ``_-. /``; column names in keys may not."""
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", key)[:250]


def _param_text(v: Any) -> str:
    text = v if isinstance(v, str) else json.dumps(v, default=str)
    return text[:MAX_PARAM_LEN]


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:500] if text else type(exc).__name__
