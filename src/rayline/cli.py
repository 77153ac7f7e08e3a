"""The ``rayline`` command line: thin wrappers that load config and call the library."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from rayline.errors import ConfigError, Interrupted, RaylineError

if TYPE_CHECKING:
    from rayline.progress import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)

ConfigArg = Annotated[str, typer.Argument(help="Path to the pipeline YAML config.")]
OverridesArg = Annotated[
    list[str] | None,
    typer.Argument(help="Dotted key=value overrides, e.g. train.epochs=3 tune.enabled=true."),
]


VerboseOpt = Annotated[
    bool,
    typer.Option(
        "--verbose",
        "-v",
        help="Show everything: rayline's logs, Ray's, Ray Data's, Tune's and MLflow's output "
        "and warnings, and the traceback of an internal error.",
    ),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print the result as one JSON document on stdout.")
]


def _versions() -> str:
    """``rayline X (ray Y, torch Z, mlflow W)``, from the installed distributions."""
    from importlib.metadata import PackageNotFoundError, version

    def of(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    from rayline import __version__

    others = ", ".join(f"{name} {of(name)}" for name in ("ray", "torch", "mlflow"))
    return f"rayline {__version__} ({others})"


def _show_version(value: bool) -> None:
    if value:
        typer.echo(_versions())
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_show_version,
            is_eager=True,
            help="Print rayline's, Ray's, torch's and MLflow's versions and exit.",
        ),
    ] = False,
) -> None:
    """rayline: raw data -> validated features -> distributed training -> gated MLflow champion."""


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _crash(exc: Exception, verbose: bool) -> None:
    """An error rayline did not anticipate: one line by default, the traceback with -v."""
    if verbose:
        raise exc
    from rayline.errors import internal_error_text

    typer.secho(internal_error_text(exc), fg=typer.colors.RED, err=True)
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


@contextmanager
def _command(verbose: bool) -> Iterator[Console]:
    """A command's body: its output routed (:mod:`rayline.progress`), errors as one line.

    The streams are restored before an error is printed; inside, rayline writes to the
    yielded console's ``out`` and ``err``.
    """
    from rayline.progress import console

    with _user_errors(verbose), console(verbose) as con:
        yield con


def _echo(con: Console, text: str, nl: bool = True) -> None:
    typer.echo(text, file=con.out, nl=nl)


@app.command()
def run(
    config: ConfigArg,
    overrides: OverridesArg = None,
    fail_on_reject: Annotated[
        bool, typer.Option("--fail-on-reject", help="Exit 3 when the gate rejects the model.")
    ] = False,
    verbose: VerboseOpt = False,
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
    as_json: JsonOpt = False,
) -> None:
    """Run the whole pipeline and register the model; the champion moves only if the gate passes.

    Prints a line as each stage starts and ends, training's epochs and a sweep's progress as
    they happen, then the summary. Ray's, Tune's and MLflow's own output goes to
    <run_dir>/ray.log (named in the summary); -v shows it, and the resolved config, too.

    Stages whose inputs match an earlier run's are reused from the cache; a failed or killed
    run run again with the same runtime.run_name resumes at the stage that did not finish.
    """
    with _command(verbose) as con:
        from rayline.config import load_config
        from rayline.pipeline import run_pipeline
        from rayline.summary import format_summary

        cfg = load_config(config, overrides or [])
        if verbose:
            cfg.runtime.log_to_driver = True
            logging.getLogger("rayline").info("resolved config:\n%s", cfg.to_yaml())
        con.capture.tee = cfg.runtime.log_to_driver  # Ray's output on the console as well
        if no_cache:
            cfg.runtime.cache = False
        result = run_pipeline(
            cfg, on_stage=con.stage_done, until=until, on_stage_start=con.stage_started
        )
        if as_json:
            _echo(con, json.dumps({**result.to_dict(), "ray_log": con.log_path}, default=str))
        else:
            text = format_summary(result, cfg.registry.alias)
            _echo(con, text + (f"\nray logs: {con.log_path}" if con.log_path else ""))
    if fail_on_reject and result.gate and not result.gate["passed"]:
        raise typer.Exit(code=3)


@app.command()
def retrain(
    config: ConfigArg,
    overrides: OverridesArg = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the decision only; exit 0 if it would retrain, 6 if nothing to do.",
        ),
    ] = False,
    every: Annotated[
        str | None,
        typer.Option(
            "--every",
            help="Keep deciding, once per interval (e.g. 1h, 30m); each cycle a fresh decision "
            "on a freshly loaded config; an error is reported and the next cycle runs. Ctrl-C "
            "stops.",
        ),
    ] = None,
    max_cycles: Annotated[
        int | None, typer.Option("--max-cycles", min=1, hidden=True, help="Stop after N cycles.")
    ] = None,
    verbose: VerboseOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Retrain if the data changed since the champion was trained; the gate decides.

    Compares the data now (data.path, narrowed by retrain.window) with what the champion
    was trained on (its run's lineage.json): new or changed files with at least
    retrain.min_new_rows rows, a new hive partition, drift of the new files, or a champion
    older than retrain.max_age retrain; else nothing to do. Exit codes: 0 promoted, 3
    retrained but rejected by the gate, 6 nothing to do, 2 a user error, 1 an internal one.
    """
    if every is None:
        code = _retrain_cycle(config, overrides, dry_run, verbose, as_json)
        if code:
            raise typer.Exit(code=code)
        return
    import time

    from rayline.cache import parse_age

    try:
        interval = parse_age(every)
        if interval <= 0:
            raise ValueError(f"'{every}' is not a positive interval")
    except ValueError as exc:
        _fail(ConfigError([f"--every: {exc}; write e.g. 1h, 30m, 90s"]))
    cycle, code = 0, 0
    try:
        while True:
            cycle += 1
            started = time.monotonic()
            typer.echo(f"cycle {cycle}: {_utc_now()}", err=True)
            try:
                code = _retrain_cycle(config, overrides, dry_run, verbose, as_json)
            except typer.Exit as exc:  # an error of this cycle: reported already
                code = exc.exit_code
                if code == 130:
                    raise typer.Exit(code=130) from None
                typer.echo(f"cycle {cycle}: failed (exit {code}); the next cycle runs", err=True)
            if max_cycles is not None and cycle >= max_cycles:
                break
            wait = max(0.0, interval - (time.monotonic() - started))
            typer.echo(f"cycle {cycle}: exit {code}; next in {wait:.0f}s (Ctrl-C stops)", err=True)
            time.sleep(wait)
    except KeyboardInterrupt:
        typer.secho(f"stopped after {cycle} cycle(s)", fg=typer.colors.YELLOW, err=True)
        return
    if code:
        raise typer.Exit(code=code)


def _utc_now() -> str:
    from rayline.run import now

    return now()


def _retrain_cycle(
    config: str, overrides: list[str] | None, dry_run: bool, verbose: bool, as_json: bool
) -> int:
    """One retrain decision (and pipeline run); its exit code. Errors exit as `_command` does."""
    with _command(verbose) as con:
        from rayline.retrain import format_decision, outcome_text, retrain_once
        from rayline.summary import format_summary

        cfg = _load(config, overrides)
        if verbose:
            cfg.runtime.log_to_driver = True
        con.capture.tee = cfg.runtime.log_to_driver

        def show(plan) -> None:
            if not as_json:
                _echo(con, format_decision(plan, cfg))

        outcome = retrain_once(
            cfg,
            dry_run=dry_run,
            on_stage=con.stage_done,
            on_stage_start=con.stage_started,
            on_decision=show,
        )
        if as_json:
            _echo(con, json.dumps(outcome.to_dict(), default=str))
        elif outcome.result is not None:
            text = format_summary(outcome.result, cfg.registry.alias)
            _echo(con, text + (f"\nray logs: {con.log_path}" if con.log_path else ""))
            _echo(con, outcome_text(outcome, cfg.registry.alias))
        elif dry_run and outcome.plan.decision.retrain:
            _echo(con, "dry run: the pipeline would run now; nothing was trained")
    return outcome.code


@app.command()
def validate(
    config: ConfigArg,
    overrides: OverridesArg = None,
    verbose: VerboseOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Ingest and validate the data only; print the data report (JSON).

    The report is the only thing on stdout (stage lines go to stderr, Ray's output to
    <storage>/validate/<run>/ray.log); --json prints it on one line.
    """
    with _command(verbose) as con:
        from rayline.config import load_config
        from rayline.pipeline import run_validation

        cfg = load_config(config, overrides or [])
        if verbose:
            cfg.runtime.log_to_driver = True
        con.capture.tee = cfg.runtime.log_to_driver
        report = run_validation(cfg, on_stage=con.stage_done, on_stage_start=con.stage_started)
        _echo(con, json.dumps(report.to_dict(), indent=None if as_json else 2, default=str))


@app.command("show-config")
def show_config(
    config: ConfigArg, overrides: OverridesArg = None, verbose: VerboseOpt = False
) -> None:
    """Print the fully resolved config (defaults filled in, overrides applied)."""
    with _command(verbose) as con:
        from rayline.config import load_config

        cfg = load_config(config, overrides or [])
        _echo(con, cfg.to_yaml(), nl=False)


@app.command("demo-data")
def demo_data(
    out: Annotated[
        str, typer.Option(help="Directory to write the Parquet files to.")
    ] = "data/breast_cancer",
    days: Annotated[
        str | None,
        typer.Option(
            "--days",
            help="Write these days of the data as a hive tree OUT/day=K/ (e.g. 1-3, then 4 "
            "later: new data for `rayline retrain`).",
        ),
    ] = None,
    of: Annotated[int, typer.Option("--of", min=1, help="Days the rows are dealt into.")] = 4,
    verbose: VerboseOpt = False,
) -> None:
    """Write the demo dataset (scikit-learn's breast cancer data) as Parquet."""
    with _command(verbose) as con:
        from rayline.demo import parse_days, write_demo_dataset, write_demo_days

        if days is None:
            paths = write_demo_dataset(out)
        else:
            try:
                chosen = parse_days(days, of)
            except ValueError as exc:
                raise ConfigError([f"--days: {exc}"]) from None
            paths = write_demo_days(out, chosen, of)
        _echo(con, f"wrote {len(paths)} Parquet file(s) to {out}")


schema_app = typer.Typer(no_args_is_help=True, help="The data contract.")
data_app = typer.Typer(no_args_is_help=True, help="Data utilities.")
app.add_typer(schema_app, name="schema")
app.add_typer(data_app, name="data")


#: ``--format`` values (``data.format``'s choices).
FORMATS = ("auto", "parquet", "csv", "json")


@schema_app.command("infer")
def schema_infer(
    data: Annotated[list[str], typer.Argument(help="Files, directories, globs or URIs.")],
    fmt: Annotated[
        str, typer.Option("--format", help="auto, parquet, csv or json (JSON Lines).")
    ] = "auto",
    max_categories: Annotated[
        int,
        typer.Option(help="String columns with at most this many values get `allowed`.", min=0),
    ] = 20,
    endpoint_url: Annotated[
        str | None, typer.Option(help="S3-compatible endpoint for s3:// paths.")
    ] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Infer a data contract from data; prints the `schema:` section as YAML.

    Example: rayline schema infer data/ > schema.yaml
    """
    with _command(verbose) as con:
        from rayline.config import RuntimeConfig
        from rayline.data.infer import infer_schema, schema_yaml

        if fmt not in FORMATS:
            raise ConfigError(
                [f"--format: '{fmt}' is not a format rayline reads; use {', '.join(FORMATS)}"]
            )
        # Ray starts only for an input too large to summarise in this process.
        schema, rows = infer_schema(
            data, fmt, endpoint_url, max_categories, RuntimeConfig(log_to_driver=verbose)
        )
        _echo(con, schema_yaml(schema, " ".join(data), rows), nl=False)


@data_app.command("synth")
def data_synth(
    rows: Annotated[int, typer.Option(help="Number of rows.", min=1)],
    out: Annotated[str, typer.Option(help="Directory to write Parquet shards to.")],
    cols: Annotated[int, typer.Option(help="Feature columns (a quarter categorical).", min=1)] = 32,
    shards: Annotated[
        int | None, typer.Option(help="Number of files (default: one per million rows).", min=1)
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    config: Annotated[
        str | None, typer.Option(help="Also write a matching pipeline config here.")
    ] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Write a sharded synthetic dataset (numeric, categorical, nulls, learnable target)."""
    with _command(verbose) as con:
        from pathlib import Path

        from rayline.data.synth import config_yaml, write_synthetic
        from rayline.paths import output_dir

        if config:  # checked before minutes of writing data
            if Path(config).is_dir():
                raise ConfigError(
                    [f"--config: '{config}' is a directory; give the path of the YAML file to "
                     "write"]
                )  # fmt: skip
            output_dir(Path(config).parent, "--config")
        paths = write_synthetic(out, rows, cols, shards, seed)
        if config:
            try:
                Path(config).write_text(config_yaml(str(Path(out)), cols))
            except OSError as exc:
                raise ConfigError(
                    [f"--config: cannot write '{config}' ({exc.strerror or exc}); give a path "
                     "this user can write"]
                ) from None  # fmt: skip
        _echo(con, f"wrote {rows} rows x {cols} features in {len(paths)} file(s) to {out}")


cache_app = typer.Typer(no_args_is_help=True, help="The stage cache under <storage>/cache.")
runs_app = typer.Typer(no_args_is_help=True, help="Runs under <storage>/runs.")
app.add_typer(cache_app, name="cache")
app.add_typer(runs_app, name="runs")
OlderThan = Annotated[
    str, typer.Option("--older-than", help="Age, e.g. 7d, 12h, 30m: what was last used before.")
]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Say what would go; delete nothing.")]


@cache_app.command("list")
def cache_list(
    config: ConfigArg, overrides: OverridesArg = None, verbose: VerboseOpt = False
) -> None:
    """Every complete cache entry: stage, key, size, age, the run that made it, runs using it."""
    with _command(verbose) as con:
        from rayline import housekeeping

        _echo(con, housekeeping.cache_table(_load(config, overrides)))


@cache_app.command("prune")
def cache_prune(
    config: ConfigArg,
    overrides: OverridesArg = None,
    older_than: OlderThan = "7d",
    dry_run: DryRun = False,
    verbose: VerboseOpt = False,
) -> None:
    """Delete cache entries not used for --older-than."""
    with _command(verbose) as con:
        from rayline import housekeeping

        _echo(con, housekeeping.prune_cache(_load(config, overrides), older_than, dry_run))


@runs_app.command("list")
def runs_list(
    config: ConfigArg, overrides: OverridesArg = None, verbose: VerboseOpt = False
) -> None:
    """Runs: name, started, status per stage, model version, gate decision."""
    with _command(verbose) as con:
        from rayline import housekeeping

        _echo(con, housekeeping.runs_table(_load(config, overrides)))


@runs_app.command("show")
def runs_show(
    name: Annotated[str, typer.Argument(help="The run's name (runtime.run_name).")],
    config: ConfigArg,
    overrides: OverridesArg = None,
    verbose: VerboseOpt = False,
) -> None:
    """One run's record: each stage's status, time, cache key and origin; its summary."""
    with _command(verbose) as con:
        from rayline import housekeeping

        _echo(con, housekeeping.show_run(_load(config, overrides), name))


@runs_app.command("prune")
def runs_prune(
    config: ConfigArg,
    overrides: OverridesArg = None,
    older_than: OlderThan = "7d",
    dry_run: DryRun = False,
    verbose: VerboseOpt = False,
) -> None:
    """Delete run directories (staged data, checkpoints) not updated for --older-than.

    A run that a registered model version names (tag rayline.run_name) is always kept.
    """
    with _command(verbose) as con:
        from rayline import housekeeping

        _echo(con, housekeeping.prune_runs(_load(config, overrides), older_than, dry_run))


AddressOpt = Annotated[
    str | None,
    typer.Option(
        "--address",
        help="The cluster's Jobs API, http://HEAD:8265 (the Ray dashboard). Default: $RAY_ADDRESS.",
    ),
]
JobIdArg = Annotated[
    str, typer.Argument(help="A job id, as `rayline submit` or `jobs list` print it.")
]


@app.command()
def submit(
    config: ConfigArg,
    overrides: OverridesArg = None,
    address: AddressOpt = None,
    shared_fs: Annotated[
        bool | None,
        typer.Option(
            "--shared-fs/--no-shared-fs",
            help="The cluster's nodes see this machine's files (a loopback cluster, NFS): "
            "relative data, storage and MLflow paths are made absolute here. Default: on for a "
            "loopback address whose nodes all run on this machine (not a port-forward); off "
            "refuses relative paths.",
        ),
    ] = None,
    working_dir: Annotated[
        str | None,
        typer.Option("--working-dir", help="Directory uploaded as the job's code (default: .)."),
    ] = None,
    fail_on_reject: Annotated[
        bool, typer.Option("--fail-on-reject", help="Exit 3 when the gate rejects the model.")
    ] = False,
    no_wait: Annotated[
        bool,
        typer.Option("--no-wait", help="Print the job id and return; `rayline jobs` follows it."),
    ] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Run the pipeline as a Ray job on a cluster; stream its output; exit with rayline's code.

    The config is validated here first. The job runs `python -m rayline run CONFIG ...` in an
    uploaded copy of the working directory (without data/, .venv/, run output or what
    .gitignore lists); relative paths are made absolute (--shared-fs) or refused. The token
    for token auth is read from $RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token.
    Ctrl-C stops following, not the job.
    """
    _submit_job(
        config,
        overrides,
        address=address,
        shared_fs=shared_fs,
        working_dir=working_dir,
        fail_on_reject=fail_on_reject,
        no_wait=no_wait,
        verbose=verbose,
    )


def _submit_job(
    config: str,
    overrides: list[str] | None,
    *,
    address: str | None,
    shared_fs: bool | None = None,
    working_dir: str | None = None,
    fail_on_reject: bool = False,
    no_wait: bool = False,
    verbose: bool = False,
    command: tuple[str, ...] = ("run",),
    extra_args: tuple[str, ...] = (),
) -> None:
    """Submit ``python -m rayline <command> CONFIG ...`` as a Ray job and follow it (or not)."""
    from rayline import submit as sub

    code = 0
    with _user_errors(verbose), sub.quiet_ray_client(verbose):
        url = sub.jobs_address(address)

        def shares_filesystem() -> bool:
            """--shared-fs by default on a loopback address whose nodes are this machine."""
            if not sub.is_loopback(url):
                return False
            hosts = sub.node_hostnames(sub.client(url))
            shared = sub.shares_filesystem(url, hosts)
            if not shared and hosts:
                typer.echo(
                    f"{url} is a loopback address, but the cluster's nodes are "
                    f"{', '.join(sorted(set(hosts)))}, not this machine (a port-forward?): "
                    "relative paths are not resolved here (--shared-fs overrides)",
                    err=True,
                )
            return shared

        job = sub.prepare(
            config,
            overrides or [],
            address=url,
            shared_fs=shared_fs if shared_fs is not None else shares_filesystem,
            working_dir=working_dir,
            fail_on_reject=fail_on_reject,
            command=command,
            extra_args=extra_args,
        )
        jc = sub.client(url)
        for line in job.resolved:
            typer.echo(f"resolved on this machine: {line}", err=True)
        job_id = sub.submit(jc, job)
        if no_wait:
            typer.echo(job_id)
            return
        typer.echo(f"submitted job {job_id} to {url}; following its output", err=True)
        try:
            info = sub.follow(jc, job_id, sub.write_stdout)
        except KeyboardInterrupt:
            typer.secho(
                f"stopped following; job {job_id} goes on: `rayline jobs logs {job_id} --follow`, "
                f"`rayline jobs stop {job_id}`",
                fg=typer.colors.YELLOW,
                err=True,
            )
            raise typer.Exit(code=130) from None
        except RaylineError as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=sub.EXIT_LOST) from None
        code = sub.exit_code(info)
        typer.secho(
            sub.explain(info), fg=typer.colors.RED if code else typer.colors.GREEN, err=True
        )
    if code:
        raise typer.Exit(code=code)


jobs_app = typer.Typer(no_args_is_help=True, help="Ray jobs on a cluster (see `rayline submit`).")
app.add_typer(jobs_app, name="jobs")


@jobs_app.command("list")
def jobs_list(
    address: AddressOpt = None,
    include_all: Annotated[
        bool, typer.Option("--all", help="Every job, not only rayline's.")
    ] = False,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """The cluster's rayline jobs, newest first: id, status, rayline exit code, pipeline."""
    from rayline import submit as sub

    with _user_errors(verbose), sub.quiet_ray_client(verbose):
        rows = sub.job_rows(sub.client(address), include_all)
        typer.echo(json.dumps(rows) if as_json else sub.jobs_table(rows))


@jobs_app.command("status")
def jobs_status(
    job_id: JobIdArg,
    address: AddressOpt = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """A job's status; for a finished one, rayline's exit code and what it means."""
    from rayline import submit as sub

    with _user_errors(verbose), sub.quiet_ray_client(verbose):
        info = sub.job_info(sub.client(address), job_id)
        status = str(getattr(info.status, "value", info.status))
        finished = status in sub.TERMINAL
        code = sub.exit_code(info) if finished else None
        if as_json:
            doc = {"job_id": job_id, "status": status, "exit_code": code, "message": info.message}
            typer.echo(json.dumps(doc))
        else:
            typer.echo(f"{job_id}: {status}")
            if finished:
                typer.echo(f"exit code {code}: {sub.EXIT_CODES[code]}")
                typer.echo(sub.explain(info))


@jobs_app.command("logs")
def jobs_logs(
    job_id: JobIdArg,
    address: AddressOpt = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until the job ends.")
    ] = False,
    verbose: VerboseOpt = False,
) -> None:
    """A job's output (the pipeline's stage lines and summary); -f follows it."""
    from rayline import submit as sub

    with _user_errors(verbose), sub.quiet_ray_client(verbose):
        jc = sub.client(address)
        sub.job_info(jc, job_id)
        if follow:
            sub.follow(jc, job_id, sub.write_stdout)
        else:
            sub.write_stdout(jc.get_job_logs(job_id))


@jobs_app.command("stop")
def jobs_stop(job_id: JobIdArg, address: AddressOpt = None, verbose: VerboseOpt = False) -> None:
    """Stop a running job (its driver gets SIGTERM, then SIGKILL); waits up to 60 s."""
    from rayline import submit as sub

    with _user_errors(verbose), sub.quiet_ray_client(verbose):
        info = sub.stop(sub.client(address), job_id)
        typer.echo(f"{job_id}: {getattr(info.status, 'value', info.status)}")


bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks of rayline's stages on a cluster.")
app.add_typer(bench_app, name="bench")


@bench_app.command("scaling")
def bench_scaling(
    config: ConfigArg,
    overrides: OverridesArg = None,
    workers: Annotated[
        str, typer.Option("--workers", "-w", help="Worker counts to train at, e.g. 1,2,4,8.")
    ] = "1,2",
    epochs: Annotated[
        int | None,
        typer.Option(
            "--epochs",
            min=1,
            help="Epochs per count (default: train.epochs); the first is a warm-up, left out "
            "of the figures, so use 2 or more.",
        ),
    ] = None,
    out: Annotated[
        str | None,
        typer.Option(
            "--out", help="Directory for scaling.json and scaling.png (default: the bench run's)."
        ),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(
            "--address",
            help="Run it as a Ray job on this cluster's Jobs API (http://HEAD:8265), as "
            "`rayline submit` runs the pipeline; default: here (a local Ray or runtime.address).",
        ),
    ] = None,
    verbose: VerboseOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Train at each worker count on the cluster; report samples/s, scaling efficiency,
    data wait vs compute per step, and model FLOP/s against a matmul peak measured in the run.

    Uses the config's data (staged and featurized by the pipeline's stages, from the cache when
    an earlier run made them) and its train section; runs on a local Ray, runtime.address, or
    (--address) as a Ray job on a cluster. Results: one MLflow run (a metric per count),
    scaling.json and scaling.png.
    """
    if address:
        from rayline.bench.scaling import parse_workers

        with _user_errors(verbose):
            parse_workers(workers)  # a bad list fails here, before anything is sent
        extra = ["--workers", workers]
        if epochs:
            extra += ["--epochs", str(epochs)]
        if out:
            extra += ["--out", out]
        if as_json:
            extra.append("--json")
        _submit_job(
            config,
            overrides,
            address=address,
            verbose=verbose,
            command=("bench", "scaling"),
            extra_args=tuple(extra),
        )
        return
    with _command(verbose) as con:
        from rayline.bench.scaling import format_table, parse_workers, run_scaling

        counts = parse_workers(workers)
        cfg = _load(config, overrides)
        if verbose:
            cfg.runtime.log_to_driver = True
        con.capture.tee = cfg.runtime.log_to_driver
        result = run_scaling(
            cfg,
            counts,
            epochs=epochs,
            out_dir=out,
            on_stage=con.stage_done,
            on_stage_start=con.stage_started,
        )
        if as_json:
            _echo(con, json.dumps(result.to_dict(), default=str))
        else:
            _echo(con, format_table(result))
            _echo(
                con,
                f"results: {result.json_path}, {result.plot_path}; MLflow run "
                f"{result.mlflow_run_id} at {result.tracking_uri}",
            )


models_app = typer.Typer(
    no_args_is_help=True, help="Registered model versions and the champion alias (MLflow)."
)
app.add_typer(models_app, name="models")

ModelArg = Annotated[str, typer.Argument(help="The registered model's name.")]
TrackingUriOpt = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        help="The MLflow tracking server or store. Default: as a pipeline run resolves it: "
        "--config's registry.tracking_uri, else $MLFLOW_TRACKING_URI, else the sqlite store under "
        "the (config's) runtime.storage_path (rayline-runs/mlflow.db).",
    ),
]
AliasOpt = Annotated[
    str | None,
    typer.Option("--alias", help="The alias that marks the serving model (default: champion)."),
]
RegistryConfigOpt = Annotated[
    str | None,
    typer.Option(
        "--config", help="A pipeline config whose registry section and storage path to use."
    ),
]


def _registry(tracking_uri: str | None, alias: str | None, config: str | None = None):
    """The registry the models commands talk to, resolved as a pipeline run resolves it."""
    import os
    from pathlib import Path

    from rayline.config import RegistryConfig, RuntimeConfig
    from rayline.errors import RegistryError
    from rayline.registry import Registry, resolve_tracking_uri
    from rayline.runtime import resolve_storage

    given = {k: v for k, v in (("tracking_uri", tracking_uri), ("alias", alias)) if v}
    if config:
        cfg = _load(config, None)
        reg, storage = cfg.registry.model_copy(update=given), cfg.runtime.storage_path
    else:
        reg, storage = RegistryConfig(**given), RuntimeConfig().storage_path
    storage = resolve_storage(storage)
    uri = resolve_tracking_uri(reg, storage)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise RegistryError(
            f"no MLflow store at '{uri}' (no pipeline has registered a model there); pass "
            "--tracking-uri (or --config) naming the store the pipeline used"
        )
    # Fail in seconds, not after MLflow's default minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    return Registry(reg.model_copy(update={"tracking_uri": uri}), storage)


@models_app.command("list")
def models_list(
    name: ModelArg,
    tracking_uri: TrackingUriOpt = None,
    alias: AliasOpt = None,
    config: RegistryConfigOpt = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """A model's versions, newest first: aliases, gate decision, test metrics, created, run."""
    with _command(verbose) as con:
        from rayline.promote import version_rows, versions_table

        registry = _registry(tracking_uri, alias, config)
        rows = version_rows(registry, name)
        if as_json:
            _echo(con, json.dumps(rows))
        else:
            _echo(con, versions_table(rows))
            current = registry.alias_version(name)
            where = f"v{current}" if current else "no version"
            _echo(con, f"\n{name}@{registry.cfg.alias}: {where} ({registry.tracking_uri})")


@models_app.command("history")
def models_history(
    name: ModelArg,
    tracking_uri: TrackingUriOpt = None,
    alias: AliasOpt = None,
    config: RegistryConfigOpt = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Every recorded move of the alias, oldest first: when, from, to, how, who, why."""
    with _command(verbose) as con:
        from rayline.promote import history_table

        registry = _registry(tracking_uri, alias, config)
        history = registry.alias_history(name)
        _echo(con, json.dumps(history) if as_json else history_table(history))


def _moved(con, registry, name: str, outcome) -> None:
    alias = registry.cfg.alias
    before = f"v{outcome.previous}" if outcome.previous else "no version"
    _echo(con, f"{name}@{alias}: {before} -> v{outcome.version}")


@app.command()
def promote(
    name: ModelArg,
    version: Annotated[str, typer.Argument(help="The version to make the champion.")],
    reason: Annotated[
        str, typer.Option("--reason", help="Why the alias moves; recorded in its history.")
    ],
    force: Annotated[
        bool,
        typer.Option("--force", help="Move the alias without gating the version first."),
    ] = False,
    tracking_uri: TrackingUriOpt = None,
    alias: AliasOpt = None,
    config: RegistryConfigOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Point the alias at VERSION if it passes the gate against the current champion.

    Both are scored on the version's own run's test split, with that run's gate policy;
    --force skips the gate. Exits 3 when the gate rejects the version (the reasons are
    printed). The move (who, when, from, to, why) is recorded on the version.
    """
    rejected = False
    with _command(verbose) as con:
        from rayline.promote import promote as do_promote

        registry = _registry(tracking_uri, alias, config)
        outcome = do_promote(registry, name, version, reason, force=force)
        if outcome.decision is not None:
            for line in outcome.decision.reasons:
                _echo(con, f"  - {line}")
        for champion in outcome.regated:
            _echo(con, f"(the alias moved meanwhile: gated again against v{champion})")
        if outcome.already:
            _echo(con, f"{name}@{registry.cfg.alias} already points at v{outcome.version}")
        elif outcome.moved:
            _moved(con, registry, name, outcome)
        else:
            rejected = True
            where = f"v{outcome.previous}" if outcome.previous else "no version"
            _echo(
                con,
                f"gate: REJECTED; {name}@{registry.cfg.alias} stays at {where} (--force moves "
                "it anyway)",
            )
    if rejected:
        raise typer.Exit(code=3)


@app.command()
def rollback(
    name: ModelArg,
    reason: Annotated[
        str, typer.Option("--reason", help="Why; recorded in the alias history.")
    ] = "rollback",
    tracking_uri: TrackingUriOpt = None,
    alias: AliasOpt = None,
    config: RegistryConfigOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Point the alias back at the previous champion, from the alias history (no gate)."""
    with _command(verbose) as con:
        from rayline.promote import rollback as do_rollback

        registry = _registry(tracking_uri, alias, config)
        _moved(con, registry, name, do_rollback(registry, name, reason))


@app.command()
def serve(
    model: Annotated[
        str,
        typer.Argument(help="NAME or NAME@alias: the registered model and the alias to serve."),
    ],
    tracking_uri: TrackingUriOpt = None,
    alias: AliasOpt = None,
    config: RegistryConfigOpt = None,
    host: Annotated[
        str | None,
        typer.Option("--host", help="Listen address (default: serve.host, 127.0.0.1)."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", min=1, max=65535, help="Port (default: serve.port, 8000)."),
    ] = None,
    token_file: Annotated[
        str | None,
        typer.Option(
            "--token-file",
            help="A file whose first line is the bearer token every request must carry "
            "(default: $RAYLINE_SERVE_TOKEN); required when --host is not loopback.",
        ),
    ] = None,
    webhook_secret_file: Annotated[
        str | None,
        typer.Option(
            "--webhook-secret-file",
            help="A file whose first line is the secret of an MLflow webhook on "
            "model_version_alias.created (default: $RAYLINE_SERVE_WEBHOOK_SECRET): POST "
            "/webhook then takes its signed deliveries and reads the alias at once.",
        ),
    ] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Serve NAME@alias over HTTP with Ray Serve, following the alias as it moves.

    POST /predict takes JSON rows ({"records": [...]}, {"columns": {...}} or a list of
    records) and answers the predictions, class probabilities and the version that scored
    them; GET /health; GET /model (version, lineage, model card). Each replica reads the
    alias every serve.poll_interval_s and swaps in a new version without dropping a request.
    Replicas and batching come from --config's serve section. Ctrl-C stops it.
    """
    with _command(verbose) as con:
        import signal
        import time
        from pathlib import Path

        from rayline.config import RuntimeConfig, ServeConfig
        from rayline.errors import RegistryError
        from rayline.serve_app import (
            is_loopback,
            parse_target,
            read_token,
            read_webhook_secret,
            start,
        )

        try:
            name, alias = parse_target(model, alias)
            token = read_token(token_file)
            webhook_secret = read_webhook_secret(webhook_secret_file)
        except ValueError as exc:
            raise ConfigError([str(exc)]) from None
        cfg = _load(config, None) if config else None
        settings = cfg.serve if cfg else ServeConfig()
        settings = settings.model_copy(
            update={k: v for k, v in (("host", host), ("port", port)) if v is not None}
        )
        if not is_loopback(settings.host) and not token:
            raise ConfigError(
                [
                    f"--host: {settings.host} is not loopback, so requests must carry a token: "
                    "give --token-file FILE or set $RAYLINE_SERVE_TOKEN"
                ]
            )
        registry = _registry(tracking_uri, alias, config)
        alias = registry.cfg.alias
        registry.registered_model(name)  # a missing model says so
        version = registry.alias_version(name)
        if version is None:
            raise RegistryError(
                f"{name}@{alias} points at no version at '{registry.tracking_uri}'; "
                f"`rayline models list {name}` lists them, `rayline promote {name} VERSION "
                "--reason TEXT` sets it"
            )
        registry.check_ready(name, version)
        runtime = cfg.runtime if cfg else RuntimeConfig()
        con.attach(Path(registry.storage_path, "serve", name))
        con.capture.tee = verbose
        from rayline.runtime import init_ray

        def stop(signum, frame):
            raise KeyboardInterrupt

        previous, started = None, False
        try:
            init_ray(runtime)
            started = True
            # After Ray's start: its core worker installs a SIGTERM handler that aborts.
            previous = signal.signal(signal.SIGTERM, stop)
            try:
                url = start(name, alias, registry.tracking_uri, settings, token, webhook_secret)
            except RuntimeError as exc:
                lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
                raise RegistryError(
                    f"the Serve application for {name}@{alias} did not start: "
                    f"{lines[-1] if lines else type(exc).__name__}; Ray's output: {con.log_path}"
                ) from None
            _echo(
                con,
                f"serving {name}@{alias} (v{version}) at {url}: POST {url}/predict, GET "
                f"{url}/health, GET {url}/model; following the alias every "
                f"{settings.poll_interval_s:g} s"
                f"{f' and on POST {url}/webhook' if webhook_secret else ''}; Ctrl-C stops\n"
                f"ray logs: {con.log_path}",
            )
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            _echo(con, f"stopping {name}@{alias}")
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            if started:  # this application only: a cluster's other Serve apps stay
                _stop_app(name)


def _stop_app(name: str) -> None:
    from ray import serve as ray_serve

    from rayline.serve_app import app_name

    try:
        ray_serve.delete(app_name(name))
    except Exception as exc:  # Ray or Serve gone already: nothing left to stop
        logging.getLogger("rayline").debug("serve.delete: %s", exc)


def _load(config: str, overrides: list[str] | None):
    from rayline.config import load_config

    return load_config(config, overrides or [])


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except SystemExit as exc:
        if "ray" in sys.modules and (exc.code is None or isinstance(exc.code, int)):
            _exit_now(exc.code or 0)
        raise


def _exit_now(code: int) -> None:
    """End the process with ``code`` once the exit handlers have run.

    The handlers are what exiting does for the user: Ray's shutdown of a local instance,
    MLflow's and logging's flushes, temporary directories' removal. What the interpreter
    does after them in a process that started Ray (the C++ core worker's and gRPC's
    teardown) took 2.2-2.4 s on 2 cores after every ``rayline run``, and nothing depends
    on it. Ray is shut down first, explicitly: its own exit handler waits 0.5 s more for
    workers' last log lines, and every stage's work was done (and logged) before this.
    """
    import atexit
    import os

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
