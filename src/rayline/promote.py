"""Moving the champion alias: gated, safe against a concurrent move, recorded.

The register stage, ``rayline promote`` and ``rayline rollback`` move the alias through
here. A gate decision is taken against the champion of the moment; MLflow has no
compare-and-set for aliases, so :func:`move_gated` re-reads the alias right before the move
(:meth:`rayline.registry.Registry.move_alias`), and when another registration moved it in
between, the candidate is scored again against the new champion on the same test rows
(:func:`gate_against`: :func:`rayline.evaluate.score` and :func:`rayline.gate.decide`, as
the evaluate and gate stages call them) and moves only if it still passes.

``rayline promote`` gates a registered version on its own run's test split: the run's
resolved config (``config/resolved_config.json``) and its data report
(``reports/pipeline_result.json``: the staged data's path and the test split's row count)
come from the version's MLflow run, the model (preprocessor, network spec, weights) from
the version itself.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

from rayline.errors import ConfigError, RegistryError
from rayline.registry import Registry, pause_before_alias, rollback_target

log = logging.getLogger(__name__)

#: How many times a candidate is gated again when the alias keeps moving under it.
MAX_REGATES = 3


@dataclass
class Candidate:
    """What gating a model needs: the model itself and the test split it is scored on."""

    name: str
    staged_path: str
    test_rows: int | None
    prep: Any  # rayline.data.features.FittedPreprocessor
    model_spec: dict[str, Any]
    weights_dir: str  # a local directory holding model.pt
    cfg: Any  # rayline.config.PipelineConfig: gate policy, batch size, in-process rows
    drift: Any = None  # the drift findings the pipeline's gate saw, or None


@dataclass
class Promotion:
    """What a move of the alias came to.

    Attributes:
        moved: The alias points at ``version`` now.
        version: The version that was to become the champion.
        previous: The version the alias pointed at before (None: there was none).
        decision: The last gate decision (None when no gate ran: ``--force``, rollback).
        regated: The champions the candidate was gated against again, in order, because
            the alias moved after the first decision.
        already: The alias already pointed at ``version``; nothing was moved.
    """

    moved: bool
    version: str
    previous: str | None
    decision: Any = None
    regated: list[str] = field(default_factory=list)
    already: bool = False


def gate_against(cand: Candidate, champion_version: str | None, tracking_uri: str):
    """Score ``cand`` and champion version ``champion_version`` on the candidate's test rows.

    Returns the :class:`rayline.gate.GateDecision` of the gate stage's checks
    (:func:`rayline.stages.gate.decide_all`: thresholds, slice bounds, the point or paired
    bootstrap comparison, an unscorable champion, drift) on one scoring pass
    (:func:`rayline.evaluate.score`, with the slice columns). The champion is pinned by
    version (``models:/NAME/N``), so the decision is about that version even if the alias
    moves again meanwhile.
    """
    from types import SimpleNamespace

    from rayline import analysis
    from rayline import evaluate as ev
    from rayline.registry import load_pyfunc
    from rayline.stages.evaluate import Evaluation, slice_specs
    from rayline.stages.gate import decide_all

    cfg = cand.cfg
    uri = f"models:/{cand.name}/{champion_version}" if champion_version else None
    loader = partial(load_pyfunc, tracking_uri=tracking_uri)
    specs = slice_specs(cfg)
    scores = ev.score(
        cand.staged_path,
        cand.prep,
        cand.model_spec,
        cand.weights_dir,
        cfg.evaluate.batch_size,
        champion=(loader, uri) if uri else None,
        test_rows=cand.test_rows,
        max_rows=cfg.runtime.in_process_max_rows,
        columns=[c for c, _ in specs],
    )
    report = ev.EvalReport(rows=scores.rows, metrics=scores.metrics)
    if uri:
        report.champion_uri = uri
        report.champion_metrics = scores.champion_metrics
        if scores.champion_error:
            report.extra["champion_error"] = scores.champion_error
    if specs and scores.rows:
        report.extra["slices"] = analysis.slice_metrics(
            cand.prep.task, scores.y, scores.outputs, scores.columns, specs
        )
    evaluation = Evaluation(
        report,
        (str(champion_version), uri) if uri else None,
        scores=scores,
        candidates={"challenger": ev.Candidate("challenger", cand.model_spec, cand.weights_dir)},
    )
    return decide_all(SimpleNamespace(cfg=cfg), evaluation, cand.drift)


def move_gated(
    registry: Registry,
    name: str,
    version: str,
    expected: str | None,
    decision,
    gate_again: Callable[[str | None], Any],
    reason: str,
    action: str,
    label: str,
    alias: str | None = None,
) -> Promotion:
    """Move the alias to ``version`` if ``decision`` (taken against ``expected``) passed.

    When the alias no longer points at ``expected``, ``gate_again(current)`` decides again
    against the version it points at now, at most :data:`MAX_REGATES` times.

    ``label`` names the caller for the test hook :data:`rayline.registry.PAUSE_ENV`
    (``{run}`` in its path), which pauses between the gate and the alias move.
    """
    alias = alias or registry.cfg.alias
    version = str(version)
    regated: list[str] = []
    for _ in range(MAX_REGATES + 1):
        if not decision.passed:
            return Promotion(False, version, expected, decision, regated)
        pause_before_alias(label)
        move = registry.move_alias(name, version, expected, reason, action=action, alias=alias)
        if move.moved:
            return Promotion(True, version, move.current, decision, regated)
        if move.current == version:  # someone else made it the champion meanwhile
            return Promotion(True, version, move.current, decision, regated, already=True)
        log.warning(
            "%s@%s moved from v%s to v%s after the gate; gating v%s again against v%s",
            name,
            alias,
            expected,
            move.current,
            version,
            move.current,
        )
        expected = move.current
        regated.append(str(expected))
        decision = gate_again(expected)
    raise RegistryError(
        f"{name}@{alias} moved {MAX_REGATES + 1} times while v{version} was being gated; "
        "nothing was moved: run it again"
    )


# -- rayline promote / rollback ---------------------------------------------------------------
def load_candidate(registry: Registry, name: str, version: str, workdir: str) -> Candidate:
    """A registered version as a :class:`Candidate`, on its own run's test split.

    Raises:
        RegistryError: the version, its run's config or data report, or its staged test
            split cannot be found.
    """
    import mlflow.artifacts

    from rayline.config import validate_config
    from rayline.data.features import FittedPreprocessor
    from rayline.data.stage import split_path
    from rayline.paths import filesystem
    from rayline.train.loop import WEIGHTS_FILE

    mv = registry.model_version(name, version)
    run_id = (mv.tags or {}).get("rayline.mlflow_run_id") or mv.run_id
    force = "promote it with --force to skip the gate"
    if not run_id:
        raise RegistryError(
            f"{name} v{version} was not registered by a rayline run (no rayline.mlflow_run_id "
            f"tag), so its test split is unknown; {force}"
        )

    def artifact(path: str) -> dict[str, Any]:
        def fetch() -> str:
            return mlflow.artifacts.download_artifacts(
                run_id=run_id,
                artifact_path=path,
                dst_path=workdir,
                tracking_uri=registry.tracking_uri,
            )

        try:
            local = registry.call(f"downloading {path} of run {run_id}", fetch)
            return json.loads(Path(local).read_text())
        except (OSError, ValueError) as exc:
            raise RegistryError(
                f"{name} v{version}: cannot read {path} of its MLflow run {run_id} ({exc}); {force}"
            ) from None
        except Exception as exc:
            if isinstance(exc, RegistryError):
                raise
            raise RegistryError(
                f"{name} v{version}: its MLflow run {run_id} has no {path} "
                f"({str(exc).splitlines()[0][:200]}); {force}"
            ) from None

    try:
        cfg = validate_config(artifact("config/resolved_config.json"))
    except ConfigError as exc:
        raise RegistryError(
            f"{name} v{version}: its run's config no longer validates ({exc}); {force}"
        ) from None
    report = (artifact("reports/pipeline_result.json").get("data_report")) or {}
    staged = report.get("staged_path")
    if not staged:
        raise RegistryError(f"{name} v{version}: its run recorded no staged data; {force}")
    fs, inner = filesystem(split_path(staged, "test"))
    import pyarrow.fs as pafs

    if fs.get_file_info(inner).type == pafs.FileType.NotFound:
        raise RegistryError(
            f"{name} v{version}: its run's test split {split_path(staged, 'test')} no longer "
            f"exists (pruned?); run the pipeline again, or {force}"
        )

    def model_files() -> str:
        return mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{version}",
            dst_path=str(Path(workdir, "model")),
            tracking_uri=registry.tracking_uri,
        )

    local = Path(registry.call(f"downloading {name} v{version}", model_files))
    files = local / "artifacts"
    if not (files / WEIGHTS_FILE).is_file():
        raise RegistryError(f"{name} v{version}: its model has no {WEIGHTS_FILE}; {force}")
    return Candidate(
        name=name,
        staged_path=staged,
        test_rows=(report.get("splits") or {}).get("test"),
        prep=FittedPreprocessor.from_json((files / "preprocessor.json").read_text()),
        model_spec=json.loads((files / "model_spec.json").read_text()),
        weights_dir=str(files),
        cfg=cfg,
    )


def promote(
    registry: Registry, name: str, version: str, reason: str, force: bool = False
) -> Promotion:
    """``rayline promote``: make ``version`` the champion, through the gate unless ``force``.

    The gate scores the version and the current champion on the version's own run's test
    split and applies that run's gate policy.
    """
    version = str(version)
    if not reason.strip():
        raise RegistryError("--reason: say why the alias moves (it is recorded)")
    registry.check_ready(name, version)
    current = registry.alias_version(name)
    if current == version:
        return Promotion(False, version, current, already=True)
    if force:
        move = registry.move_alias(
            name, version, current, reason, action="promote --force", check_expected=False
        )
        return Promotion(True, version, move.current)
    with tempfile.TemporaryDirectory(prefix="rayline-promote-") as tmp:
        cand = load_candidate(registry, name, version, tmp)

        def again(champion: str | None):
            return gate_against(cand, champion, registry.tracking_uri)

        return move_gated(
            registry, name, version, current, again(current), again, reason, "promote", "promote"
        )


def rollback(registry: Registry, name: str, reason: str = "") -> Promotion:
    """``rayline rollback``: the alias back to the champion before the current one."""
    alias = registry.cfg.alias
    history = registry.alias_history(name)
    current = registry.alias_version(name)
    target = rollback_target(history, current)
    if target is None:
        raise RegistryError(
            f"{name}@{alias}: the alias history ({len(history)} recorded move(s)) has no "
            f"champion before v{current}; move it by hand: rayline promote {name} VERSION "
            "--reason TEXT"
        )
    move = registry.move_alias(name, target, current, reason or "rollback", action="rollback")
    if not move.moved:
        raise RegistryError(
            f"{name}@{alias} moved to v{move.current} while rolling back; nothing was moved: "
            "run it again"
        )
    return Promotion(True, target, current)


# -- tables -------------------------------------------------------------------------------------
def _when(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def version_rows(registry: Registry, name: str) -> list[dict[str, Any]]:
    """``rayline models list``: one dict per version, newest first."""
    rows = []
    aliases = registry.aliases(name)
    for mv in registry.versions(name):
        tags = mv.tags or {}
        try:
            metrics = json.loads(tags.get("rayline.test_metrics") or "{}")
        except ValueError:
            metrics = {}
        rows.append(
            {
                "version": str(mv.version),
                "aliases": sorted(aliases.get(str(mv.version), [])),
                "gate": tags.get("rayline.gate"),
                "test_metrics": metrics if isinstance(metrics, dict) else {},
                "created": _when(mv.creation_timestamp),
                "run_name": tags.get("rayline.run_name"),
                "run_id": tags.get("rayline.mlflow_run_id") or mv.run_id,
                "status": str(getattr(mv.status, "name", mv.status)),
            }
        )
    return rows


def versions_table(rows: list[dict[str, Any]]) -> str:
    """The rows of :func:`version_rows` as a table."""
    names: list[str] = []
    for r in rows:
        names += [k for k in r["test_metrics"] if k not in names]
    head = ["version", "aliases", "gate", *names, "created (UTC)", "run"]
    body = []
    for r in rows:
        m = r["test_metrics"]
        body.append(
            [
                r["version"],
                ",".join(f"@{a}" for a in r["aliases"]) or "-",
                r["gate"] or "-",
                *(f"{m[n]:.4f}" if isinstance(m.get(n), int | float) else "-" for n in names),
                r["created"],
                r["run_name"] or r["run_id"] or "-",
            ]
        )
    return _table(head, body)


def history_table(history: list[dict[str, Any]]) -> str:
    """``rayline models history``: one line per alias move, oldest first."""
    body = [
        [
            str(m.get("at", ""))[:19].replace("T", " "),
            f"v{m.get('from')}" if m.get("from") else "-",
            f"v{m.get('to')}",
            str(m.get("action", "")),
            str(m.get("by", "")),
            str(m.get("reason", "")).replace("\n", " ")[:80],
        ]
        for m in history
    ]
    return _table(["at (UTC)", "from", "to", "action", "by", "reason"], body)


def _table(head: list[str], body: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body, strict=False)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip()
             for row in [head, *body]]  # fmt: skip
    return "\n".join(lines)
