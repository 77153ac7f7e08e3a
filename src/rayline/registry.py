"""Everything MLflow: tracking runs, artifacts, the model registry and the champion alias.

This is the only module that talks to the tracking server (``serving.py`` only defines the
model that MLflow loads). Calls that fail because the server is down or misconfigured
surface as :class:`RegistryError` naming the URI.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
            mlflow.end_run(status="KILLED")
            raise
        except BaseException:
            mlflow.end_run(status="FAILED")
            raise
        mlflow.end_run(status="FINISHED")

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
            info = mlflow.pyfunc.log_model(
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

    def register(self, model_uri: str, name: str, tags: dict[str, Any]) -> str:
        """Register ``model_uri`` as a new version of ``name``; return the version."""
        try:
            mv = mlflow.register_model(
                model_uri, name, tags={k: _param_text(v) for k, v in tags.items()}
            )
        except MlflowException as exc:
            raise RegistryError(f"cannot register model '{name}': {_short(exc)}") from None
        return str(mv.version)

    def set_version_tags(self, name: str, version: str, tags: dict[str, Any]) -> None:
        """Tag a model version (e.g. with the gate decision)."""
        for k, v in tags.items():
            self.client.set_model_version_tag(name, version, k, _param_text(v))

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
        try:
            mv = self.client.get_model_version_by_alias(name, self.cfg.alias)
        except MlflowException as exc:
            # Only "no such model/alias" means there is no champion. Any other failure must
            # not read as "no champion": the gate would then promote on thresholds alone.
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST" or (
                not isinstance(exc, RestException)
                and ("not found" in str(exc).lower() or "does not exist" in str(exc).lower())
            ):
                return None
            raise RegistryError(f"cannot look up {name}@{self.cfg.alias}: {_short(exc)}") from None
        return str(mv.version), f"models:/{name}@{self.cfg.alias}"

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

    def promote(self, name: str, version: str) -> None:
        """Point the alias at ``version``."""
        self.client.set_registered_model_alias(name, self.cfg.alias, version)


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
