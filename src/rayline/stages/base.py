"""What a stage is: a unit that declares what it reads and returns a typed result.

A stage names the config sections it reads (``reads``), the earlier stages whose results
it needs (``needs``) and, when its result is cacheable, the rayline modules that compute
it (``code``) and the user code its config imports (:meth:`Stage.user_code`). From those
the pipeline derives the stage's cache key (:func:`rayline.cache.stage_key`); a stage never
computes its own key, so the key cannot forget an input the stage reads.

A cacheable stage splits its work in two: :meth:`Stage.compute` writes its files into the
entry directory it is given and returns its result, :meth:`Stage.save` turns that result
into the JSON the entry's marker keeps, and :meth:`Stage.load` rebuilds the result from an
entry. :meth:`Stage.finish` runs either way, after a fresh or a reused result: it logs the
stage's artifacts to this run's MLflow run and does the part that must not be cached
(profile: compare with *today's* champion).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from rayline.config import PipelineConfig
    from rayline.run import Run


class Stage:
    """One step of the pipeline. Subclasses set the class attributes and override methods."""

    #: The stage's name, as the summary, the run record and the cache directory show it.
    name: ClassVar[str] = ""
    #: Top-level config sections the stage reads (its config slice, part of its key).
    reads: ClassVar[tuple[str, ...]] = ()
    #: Earlier stages whose results :meth:`compute` receives.
    needs: ClassVar[tuple[str, ...]] = ()
    #: Whether results are cached across runs (content-addressed) and reused on resume.
    cacheable: ClassVar[bool] = False
    #: rayline modules (or packages) whose source is part of the key.
    code: ClassVar[tuple[str, ...]] = ()
    #: The name later stages find the result under (default: ``name``); ``train`` and
    #: ``tune`` both provide ``train``.
    provides: ClassVar[str | None] = None

    @property
    def result_name(self) -> str:
        """The name later stages find this stage's result under."""
        return self.provides or self.name

    def enabled(self, cfg: PipelineConfig) -> bool:
        """Whether the stage runs under this config."""
        return True

    def config_slice(self, cfg: PipelineConfig) -> dict[str, Any]:
        """The part of the resolved config the stage reads."""
        data = cfg.to_dict()
        return {k: data[k] for k in self.reads}

    def user_code(self, cfg: PipelineConfig) -> list[str]:
        """``pkg.module:name`` references to user code the stage imports."""
        return []

    def key_inputs(self, run: Run, inputs: dict[str, Any]) -> dict[str, Any]:
        """Key material besides config, upstream keys and code (staging: the data)."""
        return {}

    def compute(self, run: Run, inputs: dict[str, Any], out: str | None) -> Any:
        """Do the stage's work; a cacheable stage writes its files under ``out``."""
        raise NotImplementedError

    def save(self, result: Any, out: str) -> dict[str, Any]:
        """The JSON-ready part of a result, kept in the entry's completion marker."""
        return {}

    def load(self, run, meta: dict[str, Any], out: str) -> Any:
        """Rebuild a result from a complete entry (``meta`` as :meth:`save` returned it)."""
        raise NotImplementedError

    def finish(self, run: Run, inputs: dict[str, Any], result: Any) -> Any:
        """After a fresh or reused result: log artifacts, do the uncached part."""
        return result

    def summary(self, run, result: Any) -> str:
        """One line for the summary."""
        return ""


def jsonable(data: Any) -> Any:
    """``data`` with numpy scalars and other non-JSON values made plain."""
    import json

    def default(value: Any) -> Any:
        if hasattr(value, "item"):
            return value.item()
        return str(value)

    return json.loads(json.dumps(data, default=default))
