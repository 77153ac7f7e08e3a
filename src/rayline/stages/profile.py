"""Profile and drift: the train split's profile (cached), compared with today's champion.

The profile (per-column statistics, quantiles and equal-width histograms) is a function of
the staged data and the schema's types, so it is cached by the staging key. The drift comparison is not: it
depends on which model holds the champion alias now, so :meth:`Profile.finish` runs it on
every run, against the profile stored with the champion's version, which also gives the
champion's histograms that ``data_profile.html`` overlays on this run's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rayline.run import read_text, write_text
from rayline.stages.base import Stage

FILE = "profile.json"


@dataclass
class ProfileResult:
    """The train split's profile; the drift report when a champion profile exists."""

    profile: Any
    drift: Any = None


class Profile(Stage):
    """Profile the train split; compare with the champion's training profile."""

    name = "profile"
    reads = ("schema",)
    needs = ("validate+split",)
    cacheable = True
    code = ("rayline.data.profile",)

    def enabled(self, cfg) -> bool:
        return cfg.drift.enabled

    def compute(self, run, inputs, out) -> ProfileResult:
        from rayline.data.profile import compute_profile
        from rayline.stages.features import train_split

        types = {c: s.type for c, s in run.cfg.schema_.columns.items()}
        staged = inputs["validate+split"].staged_path
        # A small split is profiled in this process (the same aggregations, no Ray Data job).
        current = compute_profile(train_split(staged, run.cfg.runtime.in_process_max_rows), types)
        write_text(f"{out}/{FILE}", current.to_json())
        return ProfileResult(current)

    def load(self, run, meta: dict[str, Any], out: str) -> ProfileResult:
        from rayline.data.profile import Profile as DataProfile

        return ProfileResult(DataProfile.from_json(read_text(f"{out}/{FILE}") or ""))

    def finish(self, run, inputs, result: ProfileResult) -> ProfileResult:
        """Log the profile; compare it with the champion's; render the HTML page."""
        from rayline.data.drift import compare
        from rayline.data.profile import Profile as DataProfile
        from rayline.data.profile_html import render_html

        cfg, registry = run.cfg, run.registry
        run.local_dir.mkdir(parents=True, exist_ok=True)
        (run.local_dir / FILE).write_text(result.profile.to_json())
        registry.log_file(str(run.local_dir / FILE), "profile")
        reference = drift = None
        champion = registry.champion(cfg.model_name)
        if champion:
            text = registry.version_artifact_text(cfg.model_name, champion[0], f"profile/{FILE}")
            if text:
                reference = DataProfile.from_json(text)
                drift = compare(
                    result.profile, reference, cfg.drift, f"{cfg.model_name} v{champion[0]}"
                )
                registry.log_json(drift.to_dict(), "reports/drift.json")
                registry.log_metrics(
                    {f"psi.{k}": v.psi for k, v in drift.columns.items() if v.psi is not None},
                    prefix="drift.",
                )
                run.result.data_report["drift"] = drift.to_dict()
                registry.log_json(run.result.data_report, "reports/data_report.json")
        page = render_html(result.profile, reference, drift, f"{cfg.name}: train split profile")
        (run.local_dir / "data_profile.html").write_text(page)
        registry.log_file(str(run.local_dir / "data_profile.html"), "profile")
        return ProfileResult(result.profile, drift)

    def summary(self, run, result: ProfileResult) -> str:
        drift = result.drift
        if drift is None:
            return "train split profiled (no champion profile to compare with)"
        return f"drift vs {drift.reference}: {drift.status}" + (
            f" ({', '.join(drift.failed)})" if drift.failed else ""
        )
