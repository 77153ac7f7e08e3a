"""The pipeline's stages, in order. Adding a stage means adding a module and a line here.

Each stage (:class:`rayline.stages.base.Stage`) declares the config sections it reads, the
earlier results it needs and whether its result is cached; :mod:`rayline.pipeline` runs
the list. ``docs/architecture.md`` has the table of what each reads and returns.
"""

from __future__ import annotations

from rayline.stages.base import Stage
from rayline.stages.deploy import Deploy
from rayline.stages.evaluate import Evaluate
from rayline.stages.features import Features
from rayline.stages.gate import Gate
from rayline.stages.profile import Profile
from rayline.stages.register import Register
from rayline.stages.report import Report
from rayline.stages.staging import Ingest, ValidateSplit
from rayline.stages.train import Train, Tune

#: ``rayline run``: raw data to a registered, gated model version.
PIPELINE: tuple[Stage, ...] = (
    Ingest(),
    ValidateSplit(),
    Features(),
    Profile(),
    Train(),
    Tune(),
    Evaluate(),
    Gate(),
    Report(),
    Register(),
    Deploy(),
)

#: ``rayline validate``: the data report only.
VALIDATION: tuple[Stage, ...] = (Ingest(), ValidateSplit())

__all__ = ["PIPELINE", "VALIDATION", "Stage"]
