"""``rayline serve``: a Ray Serve application that answers for ``models:/NAME@alias``.

``serving.py`` is the model MLflow loads; this module serves it over HTTP:

- ``POST /predict``: JSON rows (:mod:`rayline.serve_request` parses and checks them) ->
  ``{"model", "version", "predictions", "classes", "probabilities"}``; the rows of
  concurrent requests are scored together (``@serve.batch``, ``serve.max_batch_size`` /
  ``serve.batch_wait_timeout_s``);
- ``GET /health``: ``{"status": "ok", "version", ...}`` and the last poll of the alias;
- ``GET /model``: name, version, alias, the version's lineage tags, its model card (the
  version's description), its input columns.

Each replica follows the alias: a thread reads ``NAME@alias`` every
``serve.poll_interval_s``; when it points at another version, that version is loaded
(``models:/NAME/<version>``, pinned, so the alias moving again meanwhile cannot mix two)
beside the one serving, and then takes its place in one assignment. A request is scored
wholly by the version that was current when its batch started, and its answer names that
version; nothing is refused during a move. A failed poll or load keeps the current version
serving (``/health`` reports the error).

With a webhook secret, ``POST /webhook`` takes MLflow's (>= 3.3) webhook deliveries: one
whose HMAC signature verifies (:func:`rayline.serve_request.verify_webhook`) and that says
``model_version_alias.created`` for this NAME@alias makes the replica that receives it
read the alias at once; the others follow on their next poll. The payload's version is
never trusted: the alias read from the registry decides. An unsigned, wrongly signed or
stale delivery gets a 401.

Bad requests get a 4xx with ``{"error": <code>, "message": <what is wrong>}``; an error of
ours a 500 with the same shape and no traceback (that goes to the replica's log). With a
token (its sha256 is all the replicas get) every endpoint wants ``Authorization: Bearer
<token>`` and answers 401 without it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pandas as pd
from ray import serve

from rayline.serve_request import BadRequest, InputSpec, frame_output, parse_rows, verify_webhook

log = logging.getLogger(__name__)

#: The environment variable ``rayline serve`` reads the bearer token from.
TOKEN_ENV = "RAYLINE_SERVE_TOKEN"
#: ... and the secret of MLflow's webhook (``POST /webhook``).
WEBHOOK_SECRET_ENV = "RAYLINE_SERVE_WEBHOOK_SECRET"
MIN_TOKEN_LEN = 16
#: Version tags that are the alias history, left out of ``/model``'s lineage.
HISTORY_PREFIX = "rayline.alias_moved."
MAX_BODY_BYTES_PER_ROW = 64 * 1024


def parse_target(target: str, alias: str | None) -> tuple[str, str | None]:
    """``NAME[@alias]`` (and ``--alias``) -> ``(name, alias or None)``.

    Raises:
        ValueError: an empty name or alias, or two different aliases.
    """
    name, at, given = target.partition("@")
    if not name.strip() or (at and not given.strip()):
        raise ValueError(f"'{target}' is not NAME or NAME@alias (e.g. breast-cancer@champion)")
    if at and alias and alias != given:
        raise ValueError(f"'{target}' names alias '{given}' but --alias says '{alias}'; give one")
    return name, (given if at else alias)


def is_loopback(host: str) -> bool:
    """``127.x.x.x``, ``::1`` or ``localhost``: reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(token_file: str | None) -> str | None:
    """The bearer token: the first line of ``token_file``, else ``$RAYLINE_SERVE_TOKEN``.

    Raises:
        ValueError: the file cannot be read, or the token is empty or too short.
    """
    where = f"--token-file {token_file}" if token_file else f"${TOKEN_ENV}"
    if token_file:
        try:
            with open(token_file, encoding="utf-8") as fh:
                token = fh.readline().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"--token-file: cannot read '{token_file}' ({exc})") from None
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
        if not token:
            return None
    if len(token) < MIN_TOKEN_LEN or re.search(r"\s", token):
        raise ValueError(
            f"{where}: the token must be at least {MIN_TOKEN_LEN} characters without spaces "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    return token


def read_webhook_secret(secret_file: str | None) -> str | None:
    """The webhook secret: the first line of ``secret_file``, else ``$RAYLINE_SERVE_WEBHOOK_SECRET``.

    Raises:
        ValueError: the file cannot be read, or the secret is empty.
    """
    if secret_file:
        try:
            with open(secret_file, encoding="utf-8") as fh:
                secret = fh.readline().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(
                f"--webhook-secret-file: cannot read '{secret_file}' ({exc})"
            ) from None
        if not secret:
            raise ValueError(
                f"--webhook-secret-file: '{secret_file}' has no secret on its first line"
            )
        return secret
    return os.environ.get(WEBHOOK_SECRET_ENV, "").strip() or None


def token_digest(token: str | None) -> str | None:
    return hashlib.sha256(token.encode()).hexdigest() if token else None


def public_uri(uri: str) -> str:
    """A tracking URI without a user name or password in it."""
    parts = urlsplit(uri)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit(parts._replace(netloc=netloc))
    return uri


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Loaded:
    """One loaded version: the pyfunc, what its inputs are, what ``/model`` says of it."""

    version: str
    model: Any  # mlflow.pyfunc.PyFuncModel
    spec: InputSpec
    classes: list[Any] | None
    info: dict[str, Any] = field(default_factory=dict)


def load_version(client: Any, name: str, version: str, alias: str) -> Loaded:
    """Load ``models:/name/version`` and read what ``/model`` shows of it."""
    import mlflow.pyfunc

    mv = client.get_model_version(name, version)
    model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    predictor = getattr(_unwrap(model), "predictor", None)
    if predictor is not None:
        spec = InputSpec.from_preprocessor(predictor.prep)
        classes = list(predictor.prep.classes) if predictor.prep.classes else None
        task = predictor.prep.task
    else:
        spec = InputSpec.from_signature(model.metadata.get_input_schema())
        classes, task = None, None
    tags = mv.tags or {}
    info = {
        "name": name,
        "version": str(mv.version),
        "alias": alias,
        "task": task,
        "classes": classes,
        "inputs": spec.describe(),
        "run_id": tags.get("rayline.mlflow_run_id") or mv.run_id,
        "created": datetime.fromtimestamp(mv.creation_timestamp / 1000, timezone.utc).isoformat(
            timespec="seconds"
        )
        if mv.creation_timestamp
        else None,
        "lineage": {k: v for k, v in sorted(tags.items()) if not k.startswith(HISTORY_PREFIX)},
        "card": mv.description or None,
        "loaded_at": _now(),
    }
    return Loaded(str(mv.version), model, spec, classes, info)


def _unwrap(model: Any) -> Any:
    try:
        return model.unwrap_python_model()
    except Exception:  # not a PythonModel (another flavor)
        return None


def _json(status: int, doc: dict[str, Any], headers: dict[str, str] | None = None):
    from starlette.responses import Response

    return Response(
        json.dumps(doc, allow_nan=False, default=str),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


class ModelServer:
    """The Serve deployment: one replica serving ``name@alias`` and following it."""

    def __init__(
        self,
        name: str,
        alias: str,
        tracking_uri: str,
        settings: dict[str, Any],
        token_sha256: str | None = None,
        webhook_secret: str | None = None,
    ):
        from mlflow import MlflowClient

        from rayline.registry import use_mlflow

        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        self.name, self.alias = name, alias
        self.tracking_uri = tracking_uri
        self.max_rows = int(settings["max_rows_per_request"])
        self.poll_interval_s = float(settings["poll_interval_s"])
        self.token_sha256 = token_sha256
        self.webhook_secret = webhook_secret
        self._poll_lock = threading.Lock()
        self.webhooks: list[dict[str, Any]] = []
        use_mlflow(tracking_uri)
        self.client = MlflowClient(tracking_uri, tracking_uri)
        self.predict_batch.set_max_batch_size(int(settings["max_batch_size"]))
        self.predict_batch.set_batch_wait_timeout_s(float(settings["batch_wait_timeout_s"]))
        version = self._alias_version()
        if version is None:
            raise RuntimeError(f"{name}@{alias} points at no version")
        self.current = load_version(self.client, name, version, alias)
        self.swaps: list[dict[str, Any]] = []
        self.last_poll: str | None = _now()
        self.poll_error: str | None = None
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._follow, name="rayline-alias", daemon=True)
        self._poller.start()
        log.info("serving %s@%s v%s", name, alias, version)

    # -- following the alias ----------------------------------------------------------------
    def _alias_version(self) -> str | None:
        from mlflow.exceptions import MlflowException

        from rayline.registry import _no_such_alias

        try:
            return str(self.client.get_model_version_by_alias(self.name, self.alias).version)
        except MlflowException as exc:
            if _no_such_alias(exc):
                return None
            raise

    def _follow(self) -> None:
        while not self._stop.wait(self.poll_interval_s):
            self.poll_once()

    def poll_once(self) -> None:
        """Read the alias; load and swap in the version it points at when that changed."""
        with self._poll_lock:  # the thread's poll and a webhook's never load twice at once
            self._poll()

    def _poll(self) -> None:
        try:
            version = self._alias_version()
            self.last_poll = _now()
            if version is None:
                self.poll_error = (
                    f"{self.name}@{self.alias} points at no version now; still serving "
                    f"v{self.current.version}"
                )
                return
            if version != self.current.version:
                before = self.current.version
                loaded = load_version(self.client, self.name, version, self.alias)
                self.current = loaded  # one assignment: the next batch uses it
                self.swaps.append({"from": before, "to": version, "at": _now()})
                log.info("%s@%s moved: now serving v%s (was v%s)", self.name, self.alias,
                         version, before)  # fmt: skip
            self.poll_error = None
        except Exception as exc:  # the server away, a version that will not load: keep serving
            self.poll_error = f"{type(exc).__name__}: {str(exc).strip()[:300]}"
            log.warning("following %s@%s: %s", self.name, self.alias, self.poll_error)

    def check_health(self) -> None:
        """Serve's health check: the thread that follows the alias must be alive."""
        if not self._poller.is_alive():
            raise RuntimeError("the thread following the alias died")

    def __del__(self) -> None:
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()

    # -- scoring ----------------------------------------------------------------------------
    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def predict_batch(self, frames: list[pd.DataFrame]) -> list[Any]:
        """Score the rows of several requests in one call of the model (one version)."""
        loaded = self.current
        try:
            whole = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
            out = await asyncio.to_thread(loaded.model.predict, whole)
            results, start = [], 0
            for f in frames:
                part = out.iloc[start : start + len(f)]
                start += len(f)
                results.append((loaded, part))
            return results
        except Exception:
            if len(frames) == 1:
                return [self._score_alone(loaded, frames[0])]
        # One request's rows spoiled the batch: score each alone, so only that one fails.
        return [self._score_alone(loaded, f) for f in frames]

    def _score_alone(self, loaded: Loaded, frame: pd.DataFrame) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return (loaded, loaded.model.predict(frame))
        except (ValueError, TypeError, MlflowException) as exc:
            text = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else type(exc)
            return BadRequest(400, "rejected", f"the model refused the rows: {text}")
        except Exception as exc:
            log.exception("scoring %d rows with v%s failed", len(frame), loaded.version)
            return RuntimeError(type(exc).__name__)

    # -- HTTP -------------------------------------------------------------------------------
    async def __call__(self, request: Any):
        try:
            return await self._answer(request)
        except BadRequest as exc:
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
            return _json(exc.status, exc.body(), headers)
        except Exception as exc:
            log.exception("answering %s %s", request.method, request.url.path)
            return _json(
                500,
                {
                    "error": "internal",
                    "message": f"internal error ({type(exc).__name__}); the replica's log "
                    "has the details",
                },
            )

    def _authorize(self, request: Any) -> None:
        if not self.token_sha256:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise BadRequest(
                401, "unauthorized", "this server wants a token: Authorization: Bearer <token>"
            )
        digest = hashlib.sha256(given.strip().encode()).hexdigest()
        if not hmac.compare_digest(digest, self.token_sha256):
            raise BadRequest(401, "unauthorized", "the bearer token is not this server's")

    async def _answer(self, request: Any):
        path = request.url.path
        root = request.scope.get("root_path") or ""
        if root and path.startswith(root):  # an application under a route prefix
            path = path[len(root) :]
        path = path.rstrip("/") or "/"
        routes = {"/predict": "POST", "/health": "GET", "/model": "GET", "/webhook": "POST"}
        if path not in routes:
            raise BadRequest(
                404,
                "not_found",
                f"no endpoint {path}; this server has POST /predict, GET /health, GET /model",
            )
        if path == "/webhook" and not self.webhook_secret:
            raise BadRequest(
                404,
                "not_found",
                "webhooks are off: start rayline serve with --webhook-secret-file (or "
                f"${WEBHOOK_SECRET_ENV})",
            )
        if request.method != routes[path] and not (
            request.method == "HEAD" and routes[path] == "GET"
        ):
            raise BadRequest(
                405, "method_not_allowed", f"{path} takes {routes[path]}, not {request.method}"
            )
        if path == "/webhook":  # MLflow cannot send a bearer token: its HMAC signature instead
            return _json(200, self.webhook(await request.body(), request.headers))
        self._authorize(request)
        if path == "/health":
            return _json(200, self.health())
        if path == "/model":
            extra = {"swaps": self.swaps[-20:], "webhooks": self.webhooks[-20:]}
            return _json(200, self.current.info | extra)
        return await self._predict(request)

    def webhook(self, body: bytes, headers: Any) -> dict[str, Any]:
        """An MLflow webhook: a signed ``model_version_alias.created`` for this NAME@alias
        makes the replica read the alias now (the alias itself, never the payload's version,
        decides what is served); any other event is acknowledged and ignored.
        """
        doc = verify_webhook(self.webhook_secret, headers, body, time.time())
        data = doc.get("data") if isinstance(doc.get("data"), dict) else {}
        event = f"{doc.get('entity')}.{doc.get('action')}"
        ours = data.get("name") == self.name and data.get("alias") == self.alias
        if event != "model_version_alias.created" or not ours:
            return {"accepted": False, "reason": f"not an alias move of {self.name}@{self.alias}"}
        self.webhooks.append({"version": str(data.get("version")), "at": _now()})
        threading.Thread(target=self.poll_once, name="rayline-webhook", daemon=True).start()
        return {"accepted": True, "version": str(data.get("version"))}

    async def refresh(self) -> dict[str, Any]:
        """Read the alias now and swap when it moved (the deploy stage broadcasts this to
        every replica); return what this replica serves."""
        await asyncio.to_thread(self.poll_once)
        try:
            ctx = serve.get_replica_context()
            replica, world = ctx.replica_id.unique_id, ctx.world_size
        except Exception:  # outside a replica (unit tests)
            replica, world = None, None
        return {**self.health(), "replica": replica, "world_size": world}

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "model": self.name,
            "alias": self.alias,
            "version": self.current.version,
            "last_poll": self.last_poll,
            "poll_error": self.poll_error,
        }

    async def _predict(self, request: Any):
        length = request.headers.get("content-length")
        limit = self.max_rows * MAX_BODY_BYTES_PER_ROW
        if length and length.isdigit() and int(length) > limit:
            raise BadRequest(413, "too_large", f"the body is {length} bytes; at most {limit}")
        body = await request.body()
        if len(body) > limit:
            raise BadRequest(413, "too_large", f"the body is {len(body)} bytes; at most {limit}")
        frame = parse_rows(body, self.current.spec, self.max_rows)
        result = await self.predict_batch(frame)
        if isinstance(result, Exception):
            raise result
        loaded, out = result
        doc = {"model": self.name, "version": loaded.version}
        doc.update(frame_output(out, loaded.classes))
        return _json(200, doc)


# -- the application ------------------------------------------------------------------------
def app_name(model: str) -> str:
    """The Serve application's name for a registered model."""
    return "rayline-" + re.sub(r"[^A-Za-z0-9_.-]", "-", model)


def build(
    name: str,
    alias: str,
    tracking_uri: str,
    settings: Any,
    token: str | None = None,
    webhook_secret: str | None = None,
):
    """The bound Serve application (``settings``: a :class:`rayline.config.ServeConfig`)."""
    values = settings.model_dump() if hasattr(settings, "model_dump") else dict(settings)
    deployment = serve.deployment(
        ModelServer,
        name="model",
        num_replicas=int(values["num_replicas"]),
        max_ongoing_requests=max(8, 2 * int(values["max_batch_size"])),
        ray_actor_options={"num_cpus": float(values["replica_cpus"])},
        health_check_period_s=10,
    )
    return deployment.bind(name, alias, tracking_uri, values, token_digest(token), webhook_secret)


def app(args: dict[str, Any]):
    """A Serve application builder, for ``serve run`` and a KubeRay RayService.

    ``import_path: rayline.serve_app:app`` with ``args``: ``model`` (``NAME`` or
    ``NAME@alias``, required), ``tracking_uri`` (default ``$MLFLOW_TRACKING_URI``), and any
    ``serve.*`` setting (``num_replicas``, ``max_batch_size``, ...). The bearer token and the
    webhook secret come from the environment (``RAYLINE_SERVE_TOKEN``,
    ``RAYLINE_SERVE_WEBHOOK_SECRET``, e.g. from a Kubernetes Secret), never from ``args``,
    which the cluster shows to anyone who can read the RayService.

    Raises:
        ValueError: ``model`` or the tracking URI is missing, or a setting is invalid
            (pydantic names it).
    """
    from rayline.config import ServeConfig

    args = dict(args or {})
    target = args.pop("model", None)
    if not target:
        raise ValueError("args.model is required: the registered model, NAME or NAME@alias")
    name, alias = parse_target(str(target), args.pop("alias", None))
    tracking_uri = args.pop("tracking_uri", None) or os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking_uri:
        raise ValueError(
            "no tracking URI: give args.tracking_uri or set MLFLOW_TRACKING_URI to the MLflow "
            "server the replicas can reach"
        )
    settings = ServeConfig.model_validate(args)
    token = os.environ.get(TOKEN_ENV) or None
    secret = os.environ.get(WEBHOOK_SECRET_ENV) or None
    return build(name, alias or "champion", tracking_uri, settings, token, secret)


def start(
    name: str,
    alias: str,
    tracking_uri: str,
    settings: Any,
    token: str | None = None,
    webhook_secret: str | None = None,
) -> str:
    """Start Serve's HTTP proxy on ``settings.host:port`` and run the application on it.

    Ray must be initialised. Returns the base URL. Serve's HTTP options are fixed once it
    runs on a cluster: a Serve already started there keeps its own host and port.

    Raises:
        RuntimeError: the application did not come up (Serve's message).
    """
    values = settings.model_dump() if hasattr(settings, "model_dump") else dict(settings)
    url = _start_http(values)
    serve.run(
        build(name, alias, tracking_uri, values, token, webhook_secret),
        name=app_name(name),
        route_prefix="/",
    )
    return url


def _start_http(values: dict[str, Any]) -> str:
    """Start Serve with its HTTP proxy on ``serve.host:port`` (``serve.proxy_location``);
    return that base URL. A Serve already running keeps its own options."""
    host, port = values["host"], int(values["port"])
    serve.start(
        http_options={"host": host, "port": port},
        proxy_location=values.get("proxy_location") or "EveryNode",
    )
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


@dataclass
class Deployed:
    """What the deploy stage did to a Serve application."""

    app: str
    #: "started" (no application of that name ran), "restarted" (it had failed to deploy),
    #: "updated", or "superseded" (the alias moved on meanwhile; the app serves that one).
    action: str
    version: str
    replicas: list[str]
    url: str | None = None


def deploy(
    name: str,
    alias: str,
    tracking_uri: str,
    settings: Any,
    *,
    app: str,
    version: str,
    route_prefix: str = "/",
    start_missing: bool = True,
    timeout_s: float = 300,
    token: str | None = None,
    webhook_secret: str | None = None,
    alias_version: Any = None,
) -> Deployed:
    """Make the Serve application ``app`` on this Ray cluster serve ``name@alias`` (which
    points at ``version``) on every replica.

    A running application is not redeployed (its token, replicas and routes stay as they
    are): each replica is told to read the alias now (``refresh``, broadcast to all of
    them), which swaps the new version in beside the serving one without dropping a
    request. When no application of that name runs (or it failed to deploy), one is
    started from ``settings`` if ``start_missing``. Done when as many distinct replicas as
    the deployment wants answer with the version the alias points at now
    (``alias_version()``, read again on every pass: when another promotion or a rollback
    moved it meanwhile, the app serving that version is success too, ``superseded``).
    Ray must be initialised (connected to the cluster).

    Raises:
        DeployError: the application is missing (and may not be started), serves another
            model, is not a rayline application, failed to deploy, or its replicas do not
            serve the alias's version within ``timeout_s``; the message says which and what
            Serve or the replicas said.
    """
    from ray.serve.exceptions import RayServeException
    from ray.serve.schema import ApplicationStatus

    from rayline.errors import DeployError

    deadline = time.monotonic() + timeout_s
    values = settings.model_dump() if hasattr(settings, "model_dump") else dict(settings)
    status = serve.status().applications.get(app)
    while status is not None and status.status == ApplicationStatus.DELETING:
        if time.monotonic() > deadline:
            raise DeployError(f"Serve application '{app}' is still being deleted")
        time.sleep(1)
        status = serve.status().applications.get(app)
    action, url, started = "updated", None, False
    failed = status is not None and status.status == ApplicationStatus.DEPLOY_FAILED
    if status is None or failed:
        if not start_missing:
            raise DeployError(
                f"Serve application '{app}' "
                + (f"failed to deploy ({_failure(status)})" if failed else "does not run")
                + f" on this Ray cluster and deploy.start is false: start one (`rayline serve "
                f"{name}@{alias}` or a RayService), or set deploy.start: true"
            )
        base = _start_http(values)
        target = build(name, alias, tracking_uri, values, token, webhook_secret)
        try:
            serve.run_many(
                [serve.RunTarget(target=target, name=app, route_prefix=route_prefix)],
                wait_for_applications_running=False,
            )
        except RayServeException as exc:  # e.g. the route prefix is another app's
            raise DeployError(
                f"Serve refused to start application '{app}' at route {route_prefix}: "
                f"{_one_line(exc)}; set deploy.route_prefix (or deploy.app) to one no other "
                "application uses"
            ) from None
        action = "restarted" if failed else "started"
        url, started = f"{base}{route_prefix.rstrip('/')}", True
        log.info("deploy: %s Serve application %s for %s@%s", action, app, name, alias)
    _wait_running(app, deadline, values, started)
    handle = serve.get_app_handle(app)
    last: list[Any] = []
    while True:
        remaining = max(1.0, deadline - time.monotonic())
        try:
            last = handle.broadcast("refresh").results(timeout_s=remaining, return_exceptions=True)
        except (TimeoutError, RayServeException) as exc:  # no replica known right now
            last = [exc]
        missing = [r for r in last if "does not exist" in str(r) and "refresh" in str(r)]
        if missing:
            raise DeployError(
                f"Serve application '{app}' has no `refresh` endpoint: it is not a rayline "
                "serve application, or one started by an older rayline. Restart it (`rayline "
                f"serve {name}@{alias}`, or redeploy the RayService), or set deploy.app to "
                "the rayline application"
            )
        states = [r for r in last if isinstance(r, dict)]
        other = [r for r in states if (r.get("model"), r.get("alias")) != (name, alias)]
        if other:
            raise DeployError(
                f"Serve application '{app}' serves {other[0].get('model')}@"
                f"{other[0].get('alias')}, not {name}@{alias}: set deploy.app to the "
                f"application that serves {name}@{alias} (or to a new name)"
            )
        target = (alias_version() if alias_version else None) or version
        wanted = max((int(r.get("world_size") or 0) for r in states), default=0)
        replicas = sorted({str(r.get("replica")) for r in states})
        if (
            states
            and len(states) == len(last)
            and len(replicas) >= max(1, wanted)
            and all(r["version"] == target for r in states)
        ):
            done = "superseded" if target != version else action
            return Deployed(app, done, target, replicas, url)
        if time.monotonic() > deadline:
            said = "; ".join(
                f"replica {r.get('replica')}: v{r.get('version')}"
                + (f" ({r['poll_error']})" if r.get("poll_error") else "")
                if isinstance(r, dict)
                else f"{type(r).__name__}: {_one_line(r)}"
                for r in last
            )
            raise DeployError(
                f"Serve application '{app}' did not serve {name} v{target} on every replica "
                f"({len(replicas)} of {max(1, wanted)} answered) within deploy.timeout_s="
                f"{timeout_s:g} s ({said or 'no replica answered'}); it keeps following "
                f"{name}@{alias} and takes it on a later poll once it can load it"
            )
        # A version that does not load is retried by every replica on each pass: not fast.
        time.sleep(5 if any(r.get("poll_error") for r in states) else 1)


def _one_line(exc: Any) -> str:
    text = str(exc).strip()
    return (text.splitlines()[-1] if text else type(exc).__name__)[:300]


def _failure(status: Any) -> str:
    """Why an application is not running: its deployments' own messages, else its own."""
    parts = [
        f"{name}: {_one_line(d.message)}"
        for name, d in (getattr(status, "deployments", None) or {}).items()
        if (getattr(d, "message", "") or "").strip()
    ]
    return "; ".join(parts) or _one_line(getattr(status, "message", "") or "no reason given")


def _wait_running(app: str, deadline: float, values: dict[str, Any], started: bool) -> None:
    from ray.serve.schema import ApplicationStatus

    from rayline.errors import DeployError

    while True:
        status = serve.status().applications.get(app)
        state = status.status if status is not None else "missing"
        if state == ApplicationStatus.RUNNING:
            return
        if state == ApplicationStatus.DEPLOY_FAILED:
            raise DeployError(
                f"Serve application '{app}' failed to deploy: {_failure(status)}"
                + (
                    ""
                    if started
                    else f"; `serve shutdown` or deleting '{app}' lets deploy.start start it again"
                )
            )
        if time.monotonic() > deadline:
            hint = (
                f": its replicas may not fit (each asks serve.replica_cpus="
                f"{values['replica_cpus']:g} CPUs, serve.num_replicas={values['num_replicas']})"
                if started
                else ""
            )
            raise DeployError(
                f"Serve application '{app}' is {state}, not RUNNING, after deploy.timeout_s"
                f"{hint}" + (f"; Serve says: {_failure(status)}" if status is not None else "")
            )
        time.sleep(1)


def wait_ready(url: str, token: str | None = None, timeout_s: float = 120) -> dict[str, Any]:
    """Wait until ``GET /health`` answers 200; return its JSON.

    Raises:
        TimeoutError: no 200 within ``timeout_s``.
    """
    import urllib.error
    import urllib.request

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.monotonic() + timeout_s
    last: str = "no answer"
    while time.monotonic() < deadline:
        try:
            req = urllib.request.Request(f"{url}/health", headers=headers)
            with urllib.request.urlopen(req, timeout=5) as r:
                if r.status == 200:
                    return json.loads(r.read())
        except (OSError, urllib.error.URLError, ValueError) as exc:
            last = str(exc)
        time.sleep(0.25)
    raise TimeoutError(f"{url}/health did not answer 200 within {timeout_s:g} s ({last})")
