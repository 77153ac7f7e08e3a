"""Deploy: after a passed gate, the running Serve application serves the new champion.

The register stage moved ``@alias``; a ``rayline serve`` application (or one this stage
started earlier, or a RayService) follows the alias by polling, so it would take the new
version within ``serve.poll_interval_s`` anyway. This stage makes that happen now and
confirms it: every replica of the application is told to read the alias
(:func:`rayline.serve_app.deploy`), and the stage finishes when each one serves the
version this run registered. A running application is never redeployed, so its token,
replicas and routes stay as whoever started it set them; when none runs, one is started
from the ``serve`` section (``deploy.start``).

It needs a Ray cluster that outlives the run: a local Ray ends with the run and would take
the application with it, so ``deploy.enabled`` without ``runtime.address`` (or a Ray job's
``RAY_ADDRESS``) is a config error, raised before anything trains
(:func:`deploy_problems`). Skipped, and says so, when the gate rejected the challenger.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field

from rayline.stages.base import Stage

log = logging.getLogger(__name__)


@dataclass
class DeployResult:
    """What the deploy stage did (``action``: started, updated or skipped)."""

    action: str
    app: str
    version: str | None = None
    replicas: list[str] = field(default_factory=list)
    url: str | None = None
    reason: str | None = None


def app_for(cfg) -> str:
    from rayline.serve_app import app_name

    return cfg.deploy.app or app_name(cfg.model_name)


def deploy_problems(cfg, environ=None) -> list[str]:
    """Config problems of the deploy stage that depend on where the run runs."""
    from rayline.serve_app import is_loopback

    environ = os.environ if environ is None else environ
    if not cfg.deploy.enabled:
        return []
    problems = []
    address = cfg.runtime.address or environ.get("RAY_ADDRESS")
    if not address or address == "local":
        problems.append(
            "deploy.enabled: the deploy stage updates a Serve application on a Ray cluster "
            "that outlives the run, and this run would start its own local Ray (ended, with "
            "the application, when the run ends): set runtime.address to the cluster that "
            "runs Serve (e.g. `auto` for a `ray start` cluster on this machine), submit the "
            "pipeline with `rayline submit`, or set deploy.enabled: false"
        )
    try:
        token, _ = read_secrets(cfg)
    except ValueError as exc:
        problems.append(f"deploy: {exc}")
    else:
        if cfg.deploy.start and not is_loopback(cfg.serve.host) and not token:
            problems.append(
                f"deploy.start: an application started on serve.host={cfg.serve.host} (not "
                "loopback) must want a token: set deploy.token_file or $RAYLINE_SERVE_TOKEN"
            )
    return problems


def read_secrets(cfg) -> tuple[str | None, str | None]:
    """The bearer token and webhook secret of an application this stage would start."""
    from rayline.serve_app import read_token, read_webhook_secret

    token = read_token(cfg.deploy.token_file)
    secret = read_webhook_secret(cfg.deploy.webhook_secret_file)
    return token, secret


class Deploy(Stage):
    """The running Serve application serves this run's version on every replica."""

    name = "deploy"
    reads = ("deploy", "serve", "registry")
    needs = ("register",)

    def enabled(self, cfg) -> bool:
        return cfg.deploy.enabled

    def compute(self, run, inputs, out) -> DeployResult:
        from rayline.serve_app import deploy

        cfg, result = run.cfg, run.result
        app = app_for(cfg)
        name, alias, version = cfg.model_name, cfg.registry.alias, result.model_version
        current = run.registry.alias_version(name)
        if current != version:
            why = (
                "the gate rejected it"
                if not (result.gate or {}).get("passed")
                else f"@{alias} points at v{current}"
            )
            deployed = DeployResult("skipped", app, reason=f"v{version} is not @{alias}: {why}")
        else:
            token, secret = read_secrets(cfg)
            done = deploy(
                name,
                alias,
                run.registry.tracking_uri,
                cfg.serve,
                app=app,
                version=version,
                route_prefix=cfg.deploy.route_prefix,
                start_missing=cfg.deploy.start,
                timeout_s=cfg.deploy.timeout_s,
                token=token,
                webhook_secret=secret,
                alias_version=lambda: run.registry.alias_version(name),
            )
            reason = (
                f"@{alias} moved on to v{done.version} meanwhile; the application serves it"
                if done.action == "superseded"
                else None
            )
            deployed = DeployResult(done.action, app, done.version, done.replicas, done.url, reason)
            run.registry.set_version_tags(
                name,
                version,
                {"rayline.deployed": json.dumps({"app": app, "replicas": len(done.replicas)})},
            )
        result.deploy = asdict(deployed)
        run.registry.set_tags({"rayline.deploy": deployed.action, "rayline.deploy.app": app})
        return deployed

    def summary(self, run, result: DeployResult) -> str:
        if result.action in ("skipped", "superseded"):
            return f"{result.action}: {result.reason}"
        where = f" at {result.url}" if result.url else ""
        n = len(result.replicas)
        return (
            f"{result.app} {result.action}{where}: {n} replica{'s' if n != 1 else ''} "
            f"serving v{result.version}"
        )
