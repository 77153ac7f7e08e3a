"""The ``rayline`` command line: thin wrappers that load config and call the library."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

from rayline.errors import Interrupted, RaylineError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="rayline: raw data -> validated features -> distributed training -> gated MLflow champion.",
)

ConfigArg = Annotated[str, typer.Argument(help="Path to the pipeline YAML config.")]
OverridesArg = Annotated[
    list[str] | None,
    typer.Argument(help="Dotted key=value overrides, e.g. train.epochs=3 tune.enabled=true."),
]


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("rayline").setLevel(logging.INFO)


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _crash(exc: Exception, verbose: bool) -> None:
    """An error rayline did not anticipate: one line by default, the traceback with -v."""
    if verbose:
        raise exc
    typer.secho(
        f"internal error: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}\n"
        "rerun with --verbose for the traceback, and please report it",
        fg=typer.colors.RED,
        err=True,
    )
    raise typer.Exit(code=1)


@contextmanager
def _user_errors(verbose: bool = False) -> Iterator[None]:
    """Turn errors into one clear line and an exit code: 2 for the user's, 1 for ours."""
    try:
        yield
    except Interrupted as exc:
        typer.secho(f"interrupted: {exc}", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(code=130) from None
    except KeyboardInterrupt:
        typer.secho(
            "interrupted: the run stopped before it finished and nothing was registered; run "
            "it again with the same runtime.run_name to resume (staged data, finished trials "
            "and checkpoints are kept)",
            fg=typer.colors.YELLOW,
            err=True,
        )
        raise typer.Exit(code=130) from None
    except RaylineError as exc:
        _fail(exc)
    except Exception as exc:
        _crash(exc, verbose)


def _stage_line(timing) -> None:
    typer.echo(f"[rayline] {timing.name:<15} {timing.seconds:6.1f}s  {timing.label}", err=True)


@app.command()
def run(
    config: ConfigArg,
    overrides: OverridesArg = None,
    fail_on_reject: Annotated[
        bool, typer.Option("--fail-on-reject", help="Exit 3 when the gate rejects the model.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Ray's own logs.")] = False,
    no_cache: Annotated[
        bool,
        typer.Option("--no-cache", help="Compute every stage; reuse nothing from other runs."),
    ] = False,
    until: Annotated[
        str | None,
        typer.Option(
            "--until", help="Stop after this stage (e.g. features); a rerun goes on from there."
        ),
    ] = None,
) -> None:
    """Run the whole pipeline and register the model; the champion moves only if the gate passes.

    Stages whose inputs match an earlier run's are reused from the cache; a failed or killed
    run run again with the same runtime.run_name resumes at the stage that did not finish.
    """
    from rayline.config import load_config
    from rayline.pipeline import run_pipeline
    from rayline.summary import format_summary

    _setup_logging(verbose)
    with _user_errors(verbose):
        cfg = load_config(config, overrides or [])
        if verbose:
            cfg.runtime.log_to_driver = True
        if no_cache:
            cfg.runtime.cache = False
        logging.getLogger("rayline").info("resolved config:\n%s", cfg.to_yaml())
        result = run_pipeline(cfg, on_stage=_stage_line, until=until)
    typer.echo(format_summary(result, cfg.registry.alias))
    if fail_on_reject and result.gate and not result.gate["passed"]:
        raise typer.Exit(code=3)


@app.command()
def validate(config: ConfigArg, overrides: OverridesArg = None) -> None:
    """Ingest and validate the data only; print the data report (JSON)."""
    from rayline.config import load_config
    from rayline.pipeline import run_validation

    _setup_logging(False)
    with _user_errors():
        cfg = load_config(config, overrides or [])
        report = run_validation(cfg, on_stage=_stage_line)
    typer.echo(json.dumps(report.to_dict(), indent=2))


@app.command("show-config")
def show_config(config: ConfigArg, overrides: OverridesArg = None) -> None:
    """Print the fully resolved config (defaults filled in, overrides applied)."""
    from rayline.config import load_config

    with _user_errors():
        cfg = load_config(config, overrides or [])
    typer.echo(cfg.to_yaml(), nl=False)


@app.command("demo-data")
def demo_data(
    out: Annotated[
        str, typer.Option(help="Directory to write the Parquet files to.")
    ] = "data/breast_cancer",
) -> None:
    """Write the demo dataset (scikit-learn's breast cancer data) as Parquet."""
    from rayline.demo import write_demo_dataset

    paths = write_demo_dataset(out)
    typer.echo(f"wrote {len(paths)} Parquet file(s) to {out}")


schema_app = typer.Typer(no_args_is_help=True, help="The data contract.")
data_app = typer.Typer(no_args_is_help=True, help="Data utilities.")
app.add_typer(schema_app, name="schema")
app.add_typer(data_app, name="data")


@schema_app.command("infer")
def schema_infer(
    data: Annotated[list[str], typer.Argument(help="Files, directories, globs or URIs.")],
    fmt: Annotated[
        str, typer.Option("--format", help="auto, parquet, csv or json (JSON Lines).")
    ] = "auto",
    max_categories: Annotated[
        int, typer.Option(help="String columns with at most this many values get `allowed`.")
    ] = 20,
    endpoint_url: Annotated[
        str | None, typer.Option(help="S3-compatible endpoint for s3:// paths.")
    ] = None,
) -> None:
    """Infer a data contract from data; prints the `schema:` section as YAML.

    Example: rayline schema infer data/ > schema.yaml
    """
    from rayline.config import RuntimeConfig
    from rayline.data.infer import infer_schema, schema_yaml
    from rayline.runtime import init_ray

    _setup_logging(False)
    with _user_errors():
        init_ray(RuntimeConfig())
        schema, rows = infer_schema(data, fmt, endpoint_url, max_categories)
    typer.echo(schema_yaml(schema, " ".join(data), rows), nl=False)


@data_app.command("synth")
def data_synth(
    rows: Annotated[int, typer.Option(help="Number of rows.", min=1)],
    out: Annotated[str, typer.Option(help="Directory to write Parquet shards to.")],
    cols: Annotated[int, typer.Option(help="Feature columns (a quarter categorical).", min=1)] = 32,
    shards: Annotated[
        int | None, typer.Option(help="Number of files (default: one per million rows).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    config: Annotated[
        str | None, typer.Option(help="Also write a matching pipeline config here.")
    ] = None,
) -> None:
    """Write a sharded synthetic dataset (numeric, categorical, nulls, learnable target)."""
    from pathlib import Path

    from rayline.data.synth import config_yaml, write_synthetic

    with _user_errors():
        paths = write_synthetic(out, rows, cols, shards, seed)
        if config:
            Path(config).write_text(config_yaml(str(Path(out)), cols))
    typer.echo(f"wrote {rows} rows x {cols} features in {len(paths)} file(s) to {out}")


cache_app = typer.Typer(no_args_is_help=True, help="The stage cache under <storage>/cache.")
runs_app = typer.Typer(no_args_is_help=True, help="Runs under <storage>/runs.")
app.add_typer(cache_app, name="cache")
app.add_typer(runs_app, name="runs")
OlderThan = Annotated[
    str, typer.Option("--older-than", help="Age, e.g. 7d, 12h, 30m: what was last used before.")
]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Say what would go; delete nothing.")]


@cache_app.command("list")
def cache_list(config: ConfigArg, overrides: OverridesArg = None) -> None:
    """Every complete cache entry: stage, key, size, age, the run that made it, runs using it."""
    from rayline import housekeeping

    with _user_errors():
        typer.echo(housekeeping.cache_table(_load(config, overrides)))


@cache_app.command("prune")
def cache_prune(
    config: ConfigArg,
    overrides: OverridesArg = None,
    older_than: OlderThan = "7d",
    dry_run: DryRun = False,
) -> None:
    """Delete cache entries not used for --older-than."""
    from rayline import housekeeping

    with _user_errors():
        typer.echo(housekeeping.prune_cache(_load(config, overrides), older_than, dry_run))


@runs_app.command("list")
def runs_list(config: ConfigArg, overrides: OverridesArg = None) -> None:
    """Runs: name, started, status per stage, model version, gate decision."""
    from rayline import housekeeping

    with _user_errors():
        typer.echo(housekeeping.runs_table(_load(config, overrides)))


@runs_app.command("show")
def runs_show(
    name: Annotated[str, typer.Argument(help="The run's name (runtime.run_name).")],
    config: ConfigArg,
    overrides: OverridesArg = None,
) -> None:
    """One run's record: each stage's status, time, cache key and origin; its summary."""
    from rayline import housekeeping

    with _user_errors():
        typer.echo(housekeeping.show_run(_load(config, overrides), name))


@runs_app.command("prune")
def runs_prune(
    config: ConfigArg,
    overrides: OverridesArg = None,
    older_than: OlderThan = "7d",
    dry_run: DryRun = False,
) -> None:
    """Delete run directories (staged data, checkpoints) not updated for --older-than.

    A run that a registered model version names (tag rayline.run_name) is always kept.
    """
    from rayline import housekeeping

    with _user_errors():
        typer.echo(housekeeping.prune_runs(_load(config, overrides), older_than, dry_run))


def _load(config: str, overrides: list[str] | None):
    from rayline.config import load_config

    return load_config(config, overrides or [])


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    sys.exit(main())
