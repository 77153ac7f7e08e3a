"""Every manifest in cluster/ is valid before it reaches a cluster.

No cluster and no network: each YAML document in ``cluster/`` is found and checked by
what it is, so a new file is covered without touching this module.

* KubeRay objects (``apiVersion: ray.io/*``: RayCluster, RayJob, RayService, RayCronJob)
  against the OpenAPI v3 schemas of the KubeRay v1.7.0 CRDs, vendored in
  ``tests/data/kuberay-crds/`` (``update.py`` there regenerates them from
  ``../shared/kuberay-crds/``). Those schemas accept unknown fields, so every object schema
  that lists its properties is closed first (``additionalProperties: false``) unless it
  has ``x-kubernetes-preserve-unknown-fields``; ``nullable`` and
  ``x-kubernetes-int-or-string`` get their Kubernetes meaning, and resource quantities are
  checked by the CRD's own pattern. ``metadata`` (``type: object`` in a CRD) and every pod
  template go through kubernetes-validate's ObjectMeta / PodTemplateSpec as well, and the
  names through KubeRay's own rules (DNS-1035 labels, length). The CRDs' CEL rules
  (``x-kubernetes-validations``) are not evaluated.
* Plain Kubernetes objects (the MLflow server: Namespace, Service, StatefulSet,
  Deployment) through kubernetes-validate in strict mode (unknown fields fail) against
  Kubernetes ``K8S_VERSION``.
* ``ray-up.yaml`` (a cluster launcher config) against the autoscaler schema the installed
  Ray ships, ``ray/autoscaler/ray-schema.json``, plus the rules Ray checks next.
* Each pipeline command line (a RayJob or RayCronJob entrypoint, and the
  ``jobs/train_pipeline.py`` / ``rayline run|submit|retrain`` commands in the manifests'
  comments and in cluster/README.md)
  is parsed as the shell, the script's argparse or rayline's CLI would parse it, and its
  config and overrides go through ``rayline.config.load_config``: a typo in an override
  fails here, not on the cluster.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import importlib.util
import io
import json
import os
import re
import shlex
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from rayline.config import load_config
from rayline.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
CRD_SCHEMAS = REPO / "tests" / "data" / "kuberay-crds"
SHARED_CRDS = REPO.parent / "shared" / "kuberay-crds"
README = CLUSTER / "README.md"

# The Kubernetes version whose schemas (bundled with kubernetes-validate) the plain objects
# are checked against.
K8S_VERSION = "1.33"

# KubeRay's name rules (ray-operator/controllers/ray/utils/validation.go): a DNS-1035
# label, at most 53 characters for a RayCluster and 47 for the kinds that create one from
# their name plus a 6-character suffix (RayJob, RayService; RayCronJob, which creates
# RayJobs, is held to the same).
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
MAX_NAME = {"RayCluster": 53}
MAX_NAME_DEFAULT = 47

# Where the image built from cluster/Dockerfile puts the repository, and ray-up.yaml's
# file_mounts target: a `cd` there in a command means the repository root.
REPO_LOCATIONS = {"/home/ray/rayline", "~/rayline", "$HOME/rayline"}
# $PWD and $REPO_ROOT in the README's commands: an absolute checkout path.
CHECKOUT = "/abs/checkout"


def _pin(name: str) -> str:
    """The version constraints.txt pins for a package."""
    text = (REPO / "constraints.txt").read_text(encoding="utf-8")
    found = re.search(rf"(?im)^{re.escape(name)}==(\S+)", text)
    assert found, f"constraints.txt pins no {name}"
    return found.group(1)


# --------------------------------------------------------------------------- discovery


@dataclass(frozen=True)
class Doc:
    """One YAML document of a file in cluster/."""

    path: Path
    index: int
    body: Any = field(compare=False)

    @property
    def kind(self) -> str:
        if isinstance(self.body, dict) and "apiVersion" in self.body:
            return str(self.body.get("kind"))
        return "ray-up" if _is_ray_up(self.body) else "?"

    @property
    def name(self) -> str:
        if isinstance(self.body, dict):
            meta = self.body.get("metadata") or {}
            return str(meta.get("name") or self.body.get("cluster_name") or "")
        return ""

    @property
    def id(self) -> str:
        return f"{self.path.name}#{self.index}:{self.kind}/{self.name}"


def _is_ray_up(body: Any) -> bool:
    return isinstance(body, dict) and "provider" in body and "apiVersion" not in body


def _is_kuberay(body: Any) -> bool:
    return isinstance(body, dict) and str(body.get("apiVersion", "")).startswith("ray.io/")


def _manifest_files() -> list[Path]:
    return sorted(p for p in CLUSTER.iterdir() if p.suffix in (".yaml", ".yml"))


@functools.cache
def _docs() -> tuple[Doc, ...]:
    docs = []
    for path in _manifest_files():
        with path.open(encoding="utf-8") as f:
            bodies = list(yaml.safe_load_all(f))
        docs.extend(Doc(path, i, b) for i, b in enumerate(bodies) if b is not None)
    return tuple(docs)


def _select(pred) -> list[Doc]:
    return [d for d in _docs() if pred(d.body)]


def _params(docs: list[Doc]) -> list[Any]:
    return [pytest.param(d, id=d.id) for d in docs]


KUBERAY = _select(_is_kuberay)
RAY_UP = _select(_is_ray_up)
PLAIN = _select(lambda b: isinstance(b, dict) and "apiVersion" in b and not _is_kuberay(b))


def test_every_manifest_document_is_recognized() -> None:
    """Every document is checked by one of the tests below; none slips through unchecked."""
    assert _docs(), "no manifests found in cluster/"
    unknown = [d.id for d in _docs() if d not in KUBERAY + RAY_UP + PLAIN]
    assert not unknown, f"documents no test here validates: {unknown}"
    # The files this issue ships; a new file needs no entry here.
    names = {d.path.name for d in _docs()}
    assert {"kuberay-rayjob.yaml", "kuberay-raycluster.yaml", "ray-up.yaml"} <= names
    assert "mlflow-server.yaml" in names


def _format_errors(errors: list[Any]) -> str:
    lines = []
    for e in sorted(errors, key=lambda e: [str(p) for p in e.absolute_path]):
        where = ".".join(str(p) for p in e.absolute_path) or "<root>"
        lines.append(f"  {where}: {e.message}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- KubeRay


def close_schema(node: Any) -> Any:
    """A copy of a CRD's structural schema with the meaning the API server gives it.

    * An object schema that lists ``properties`` gets ``additionalProperties: false``
      unless it has ``x-kubernetes-preserve-unknown-fields: true`` or says
      ``additionalProperties`` itself: the API server prunes unknown fields (a typo is
      silently dropped, which is worse than an error), JSON Schema would accept them.
    * ``nullable: true`` allows null; ``x-kubernetes-int-or-string`` accepts an integer
      or a string (a quantity such as ``cpu: 4`` or ``memory: 16Gi``; the CRD's pattern
      then checks the string form).
    """
    if isinstance(node, list):
        return [close_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = dict(node)
    if "properties" in out:
        out["properties"] = {k: close_schema(v) for k, v in out["properties"].items()}
        if "additionalProperties" not in out and not out.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            out["additionalProperties"] = False
    for key in ("items", "additionalProperties", "not"):
        if isinstance(out.get(key), dict):
            out[key] = close_schema(out[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in out:
            out[key] = close_schema(out[key])
    if out.get("x-kubernetes-int-or-string") and "anyOf" not in out and "type" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


@functools.cache
def _crd_validator(api_version: str, kind: str) -> jsonschema.Draft7Validator:
    version = api_version.split("/", 1)[1]
    path = CRD_SCHEMAS / f"{kind.lower()}.{version}.json"
    if not path.is_file():
        have = sorted(p.name for p in CRD_SCHEMAS.glob("*.json") if p.name != "SOURCES.json")
        pytest.fail(
            f"no KubeRay v1.7.0 schema for {api_version} {kind} in {CRD_SCHEMAS} "
            f"(vendored: {have}); KubeRay's current API is ray.io/v1"
        )
    schema = close_schema(json.loads(path.read_text(encoding="utf-8")))
    # metadata is `type: object` in a CRD; the API server checks it as ObjectMeta, and so
    # does _check_object_meta.
    schema["properties"]["metadata"] = {"type": "object"}
    return jsonschema.Draft7Validator(schema)


def _k8s_errors(obj: dict[str, Any]) -> str | None:
    """kubernetes-validate's verdict (strict: unknown fields fail), or None when valid."""
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        where = ".".join(str(p) for p in e.path) or "<root>"
        return f"  {where}: {e.message}"
    return None


def _check_object_meta(meta: Any, kind: str, kuberay: bool) -> list[str]:
    if not isinstance(meta, dict):
        return ["metadata: missing or not a mapping"]
    problems = []
    # ObjectMeta as Kubernetes defines it, through an object that is nothing else.
    err = _k8s_errors({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta})
    if err:
        problems.append(err)
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        problems.append("metadata.name: required")
    elif kuberay:
        limit = MAX_NAME.get(kind, MAX_NAME_DEFAULT)
        if not DNS1035.match(name) or len(name) > limit:
            problems.append(
                f"metadata.name: {name!r} must be a DNS-1035 label (lower case letters, digits "
                f"and '-', starting with a letter) of at most {limit} characters for a {kind}"
            )
    elif not DNS1123_SUBDOMAIN.match(name) or len(name) > 253:
        problems.append(f"metadata.name: {name!r} is not a DNS-1123 subdomain")
    return problems


def _cluster_specs(body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The RayCluster specs inside a KubeRay object, with their path."""
    spec = body.get("spec") or {}
    found = []
    for path in (
        (),  # RayCluster
        ("rayClusterSpec",),  # RayJob
        ("rayClusterConfig",),  # RayService
        ("jobTemplate", "rayClusterSpec"),  # RayCronJob
    ):
        node: Any = spec
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and "headGroupSpec" in node:
            found.append((".".join(("spec", *path)), node))
    return found


def _pod_templates(cluster: dict[str, Any], where: str) -> Iterator[tuple[str, Any]]:
    yield f"{where}.headGroupSpec.template", cluster["headGroupSpec"].get("template")
    for i, group in enumerate(cluster.get("workerGroupSpecs") or []):
        yield f"{where}.workerGroupSpecs[{i}].template", group.get("template")


def kuberay_problems(body: dict[str, Any]) -> list[str]:
    """Everything wrong with a KubeRay object; empty when it is valid."""
    validator = _crd_validator(body["apiVersion"], body["kind"])
    problems = []
    errors = list(validator.iter_errors(body))
    if errors:
        problems.append(f"{body['kind']} schema (KubeRay v1.7.0):\n{_format_errors(errors)}")
    problems += _check_object_meta(body.get("metadata"), body["kind"], kuberay=True)
    ray_pin = _pin("ray")
    for where, cluster in _cluster_specs(body):
        if cluster.get("rayVersion") != ray_pin:
            problems.append(
                f"{where}.rayVersion: {cluster.get('rayVersion')!r}, but the image has Ray "
                f"{ray_pin} (constraints.txt, cluster/Dockerfile)"
            )
        groups = [g.get("groupName") for g in cluster.get("workerGroupSpecs") or []]
        if len(groups) != len(set(groups)):
            problems.append(f"{where}.workerGroupSpecs: groupName repeats: {groups}")
        for i, group in enumerate(cluster.get("workerGroupSpecs") or []):
            lo, n, hi = (group.get(k) for k in ("minReplicas", "replicas", "maxReplicas"))
            known = [v for v in (lo, n, hi) if isinstance(v, int)]
            if known != sorted(known):
                problems.append(
                    f"{where}.workerGroupSpecs[{i}]: needs minReplicas <= replicas <= "
                    f"maxReplicas, got {lo}, {n}, {hi}"
                )
        for path, template in _pod_templates(cluster, where):
            if not isinstance(template, dict):
                continue  # the CRD schema reports a missing template
            err = _k8s_errors({"apiVersion": "v1", "kind": "PodTemplate", "template": template})
            if err:
                problems.append(f"{path} as a Kubernetes {K8S_VERSION} PodTemplateSpec:\n{err}")
    return problems


@pytest.mark.parametrize("doc", _params(KUBERAY))
def test_kuberay_manifest_is_valid(doc: Doc) -> None:
    problems = kuberay_problems(doc.body)
    assert not problems, f"{doc.path.name}: {doc.id}\n" + "\n".join(problems)


def test_kuberay_manifests_are_found() -> None:
    kinds = {d.body["kind"] for d in KUBERAY}
    assert {"RayJob", "RayCluster", "RayCronJob", "RayService"} <= kinds


def test_close_schema_closes_listed_properties_only() -> None:
    schema = close_schema(
        {
            "type": "object",
            "properties": {
                "spec": {"type": "object", "properties": {"a": {"type": "string"}}},
                "free": {
                    "type": "object",
                    "properties": {"a": {"type": "string"}},
                    "x-kubernetes-preserve-unknown-fields": True,
                },
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "blob": {"type": "object"},
                "cpu": {
                    "anyOf": [{"type": "integer"}, {"type": "string"}],
                    "pattern": "^[0-9]+m?$",
                    "x-kubernetes-int-or-string": True,
                },
                "port": {"x-kubernetes-int-or-string": True},
                "when": {"type": "string", "nullable": True},
                "items": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"b": {"type": "integer"}}},
                },
            },
        }
    )
    v = jsonschema.Draft7Validator(schema)
    ok = {
        "spec": {"a": "x"},
        "free": {"anything": 1},
        "labels": {"k": "v"},
        "blob": {"x": {"y": 1}},
        "cpu": 4,
        "port": "http",
        "when": None,
        "items": [{"b": 1}],
    }
    assert not list(v.iter_errors(ok))
    for bad in (
        {"spec": {"a": "x", "typo": 1}},
        {"items": [{"b": 1, "c": 2}]},
        {"extra": 1},
        {"cpu": "4x"},
        {"port": 1.5},
        {"labels": {"k": 1}},
    ):
        assert list(v.iter_errors(bad)), bad


# --------------------------------------------------------------------------- negative cases


def _first(kind: str) -> Doc:
    found = [d for d in KUBERAY if d.body["kind"] == kind]
    assert found, f"no {kind} manifest in cluster/"
    return found[0]


def _ray_container(body: dict[str, Any], group: str = "head") -> dict[str, Any]:
    where, cluster = _cluster_specs(body)[0]
    spec = cluster["headGroupSpec"] if group == "head" else cluster["workerGroupSpecs"][0]
    return spec["template"]["spec"]["containers"][0]


def _assert_invalid(body: dict[str, Any], *needles: str) -> None:
    text = "\n".join(kuberay_problems(body))
    assert text, "the broken manifest passed validation"
    for needle in needles:
        assert needle in text, text


def test_misspelled_rayjob_field_fails() -> None:
    body = copy.deepcopy(_first("RayJob").body)
    body["spec"]["shutdownAfterJobFinish"] = body["spec"].pop("shutdownAfterJobFinishes", True)
    _assert_invalid(body, "spec:", "'shutdownAfterJobFinish' was unexpected")


def test_crd_schema_alone_would_accept_the_typo() -> None:
    """Why close_schema exists: the CRD schema as shipped lets a misspelled field through."""
    body = copy.deepcopy(_first("RayJob").body)
    body["spec"]["shutdownAfterJobFinish"] = body["spec"].pop("shutdownAfterJobFinishes", True)
    raw = json.loads((CRD_SCHEMAS / "rayjob.v1.json").read_text(encoding="utf-8"))
    assert not list(jsonschema.Draft7Validator(raw).iter_errors(body))


@pytest.mark.parametrize("kind", ["RayJob", "RayCluster"])
def test_misspelled_container_field_fails(kind: str) -> None:
    body = copy.deepcopy(_first(kind).body)
    container = _ray_container(body, "worker")
    container["resource"] = container.pop("resources")
    _assert_invalid(body, "containers.0", "'resource' was unexpected")


def test_misspelled_metadata_field_fails() -> None:
    body = copy.deepcopy(_first("RayJob").body)
    body["metadata"]["label"] = {"team": "ml"}
    _assert_invalid(body, "metadata", "'label' was unexpected")


def test_misspelled_pod_template_metadata_fails() -> None:
    body = copy.deepcopy(_first("RayCluster").body)
    body["spec"]["headGroupSpec"]["template"]["metadata"] = {"label": {"a": "b"}}
    _assert_invalid(body, "template.metadata", "'label' was unexpected")


def test_bad_quantity_and_wrong_type_fail() -> None:
    body = copy.deepcopy(_first("RayCluster").body)
    _ray_container(body)["resources"]["limits"]["cpu"] = "4 cores"
    _assert_invalid(body, "resources.limits.cpu")
    body = copy.deepcopy(_first("RayCluster").body)
    body["spec"]["workerGroupSpecs"][0]["maxReplicas"] = "8"
    _assert_invalid(body, "maxReplicas", "is not of type 'integer'")


def test_integer_quantity_is_accepted() -> None:
    body = copy.deepcopy(_first("RayCluster").body)
    _ray_container(body)["resources"]["limits"]["cpu"] = 4
    assert not kuberay_problems(body)


def test_kuberay_rules_beyond_the_schema_fail() -> None:
    body = copy.deepcopy(_first("RayJob").body)
    body["metadata"]["name"] = "Rayline_Train"
    _assert_invalid(body, "DNS-1035")
    body = copy.deepcopy(_first("RayJob").body)
    body["metadata"]["name"] = "r" * 48
    _assert_invalid(body, "at most 47")
    body = copy.deepcopy(_first("RayCluster").body)
    body["spec"]["rayVersion"] = "2.9.0"
    _assert_invalid(body, "rayVersion")
    group = body["spec"]["workerGroupSpecs"][0]
    group["minReplicas"], group["maxReplicas"] = 4, 2
    _assert_invalid(body, "minReplicas <= replicas <= maxReplicas")


def test_unknown_kuberay_version_fails_clearly() -> None:
    body = copy.deepcopy(_first("RayJob").body)
    body["apiVersion"] = "ray.io/v1alpha1"
    with pytest.raises(pytest.fail.Exception, match="no KubeRay v1.7.0 schema"):
        kuberay_problems(body)


# --------------------------------------------------------------------------- vendored CRDs


def test_vendored_crd_schemas_cover_every_kuberay_kind() -> None:
    sources = json.loads((CRD_SCHEMAS / "SOURCES.json").read_text(encoding="utf-8"))
    assert sources["kuberay"] == "v1.7.0"
    kinds = {c["kind"] for c in sources["crds"].values()}
    assert kinds == {"RayCluster", "RayJob", "RayService", "RayCronJob"}
    for kind in kinds:
        assert (CRD_SCHEMAS / f"{kind.lower()}.v1.json").is_file()


def test_vendored_crd_schemas_are_unedited() -> None:
    """Each schema file is what update.py wrote (its sha256 is in SOURCES.json)."""
    sources = json.loads((CRD_SCHEMAS / "SOURCES.json").read_text(encoding="utf-8"))
    have = {p.name for p in CRD_SCHEMAS.glob("*.json")} - {"SOURCES.json"}
    assert have == set(sources["schemas"]), "run tests/data/kuberay-crds/update.py"
    for name, digest in sources["schemas"].items():
        assert hashlib.sha256((CRD_SCHEMAS / name).read_bytes()).hexdigest() == digest, (
            f"{name} was edited by hand: run tests/data/kuberay-crds/update.py"
        )


@pytest.mark.skipif(not SHARED_CRDS.is_dir(), reason=f"{SHARED_CRDS} not present")
def test_vendored_crd_schemas_come_from_shared_crds() -> None:
    """The CRD files in ../shared/kuberay-crds are the ones the schemas were taken from."""
    sources = json.loads((CRD_SCHEMAS / "SOURCES.json").read_text(encoding="utf-8"))
    shared = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(SHARED_CRDS.glob("ray.io_*.yaml"))
    }
    recorded = {name: c["sha256"] for name, c in sources["crds"].items()}
    assert shared == recorded, f"{SHARED_CRDS} changed: run tests/data/kuberay-crds/update.py"


# --------------------------------------------------------------------------- plain Kubernetes


@pytest.mark.parametrize("doc", _params(PLAIN))
def test_kubernetes_object_is_valid(doc: Doc) -> None:
    try:
        err = _k8s_errors(doc.body)
    except kubernetes_validate.SchemaNotFoundError as e:
        pytest.fail(f"{doc.id}: {e.message}")
    problems = [err] if err else []
    problems += _check_object_meta(doc.body.get("metadata"), doc.body["kind"], kuberay=False)
    assert not problems, f"{doc.id} (Kubernetes {K8S_VERSION}, strict):\n" + "\n".join(problems)


def _plain(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d.body
        for d in PLAIN
        if d.body["kind"] == kind and (name is None or d.body["metadata"]["name"] == name)
    ]
    assert found, f"no {kind} {name or ''} in cluster/"
    return found[0]


def test_bad_field_in_mlflow_deployment_fails() -> None:
    body = copy.deepcopy(_plain("Deployment", "mlflow"))
    body["spec"]["replica"] = 1
    assert "'replica' was unexpected" in (_k8s_errors(body) or "")
    body = copy.deepcopy(_plain("Deployment", "mlflow"))
    container = body["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["httpGet"]["pth"] = container["readinessProbe"]["httpGet"].pop(
        "path"
    )
    assert "'pth' was unexpected" in (_k8s_errors(body) or "")
    body = copy.deepcopy(_plain("Deployment", "mlflow"))
    body["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "5000"
    assert _k8s_errors(body)


def _pod_spec(body: dict[str, Any]) -> dict[str, Any]:
    return body["spec"]["template"]["spec"]


def _services() -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (d.body["metadata"]["name"], d.body["metadata"].get("namespace", "default")): d.body
        for d in PLAIN
        if d.body["kind"] == "Service"
    }


def _workloads() -> list[dict[str, Any]]:
    return [d.body for d in PLAIN if d.body["kind"] in ("Deployment", "StatefulSet")]


def test_workload_selectors_match_their_pods() -> None:
    """Deployment/StatefulSet selectors and every Service's selector find pods in cluster/."""
    for body in _workloads():
        labels = body["spec"]["template"]["metadata"]["labels"]
        wanted = body["spec"]["selector"]["matchLabels"]
        assert wanted.items() <= labels.items(), body["metadata"]["name"]
        if body["kind"] == "StatefulSet":
            assert (body["spec"]["serviceName"], body["metadata"]["namespace"]) in _services()
    for (name, ns), svc in _services().items():
        selector = svc["spec"].get("selector") or {}
        pods = [
            w
            for w in _workloads()
            if w["metadata"].get("namespace") == ns
            and selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(pods) == 1, f"Service {ns}/{name} selects {len(pods)} workloads"
        ports = {
            p.get("name"): p["containerPort"]
            for c in _pod_spec(pods[0])["containers"]
            for p in c.get("ports", [])
        }
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert target in ports or target in ports.values(), f"{ns}/{name}: {target}"


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)
    elif isinstance(node, str):
        yield node


SVC_HOST = re.compile(r"\b([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local(?::(\d+))?")


def test_in_cluster_addresses_name_services_defined_here() -> None:
    """Every <service>.<namespace>.svc.cluster.local[:port] in a manifest is a Service here."""
    services = _services()
    seen = 0
    for doc in _docs():
        for text in _strings(doc.body):
            for name, ns, port in SVC_HOST.findall(text):
                seen += 1
                assert (name, ns) in services, f"{doc.id}: no Service {ns}/{name} in cluster/"
                ports = {p["port"] for p in services[(name, ns)]["spec"]["ports"]}
                assert not port or int(port) in ports, f"{doc.id}: {ns}/{name} has no port {port}"
    assert seen


def test_no_secret_values_in_manifests() -> None:
    """Credentials come from Secrets (secretKeyRef), never literal values in a file here."""
    secretish = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|CREDENTIAL", re.I)
    for doc in _docs():
        assert doc.kind != "Secret", f"{doc.id}: create Secrets with kubectl, not in cluster/"
        stack = [doc.body]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                if isinstance(node.get("name"), str) and secretish.search(node["name"]):
                    assert "value" not in node, f"{doc.id}: {node['name']} has a literal value"
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
        for text in _strings(doc.body):
            for password in re.findall(r"://[^/:@\s]+:([^@\s]+)@", text):
                assert re.fullmatch(r"\$\([A-Z_][A-Z0-9_]*\)", password), (
                    f"{doc.id}: a password in {text!r}"
                )


def _containers(node: Any) -> Iterator[dict[str, Any]]:
    """Every container (and init container) anywhere in a manifest."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                yield from (c for c in value if isinstance(c, dict))
            else:
                yield from _containers(value)
    elif isinstance(node, list):
        for value in node:
            yield from _containers(value)


_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def test_env_references_are_defined_before_use() -> None:
    """Kubernetes expands $(VAR) only from variables defined earlier; others stay literal."""
    checked = 0
    for doc in _docs():
        for c in _containers(doc.body):
            defined: list[str] = []
            for e in c.get("env", []):
                for ref in _VAR_REF.findall(e.get("value", "")):
                    assert ref in defined, f"{doc.id}: {c['name']}: {e['name']} uses $({ref})"
                    checked += 1
                defined.append(e["name"])
            for text in _strings([c.get("command", []), c.get("args", [])]):
                for ref in _VAR_REF.findall(text):
                    assert ref in defined, f"{doc.id}: {c['name']}: $({ref}) is not in env"
                    checked += 1
    assert checked  # MLFLOW_BACKEND_STORE_URI uses $(POSTGRES_PASSWORD)


# --------------------------------------------------------------------------- MLflow server


def _mlflow_container() -> tuple[dict[str, Any], dict[str, Any]]:
    body = _plain("Deployment", "mlflow")
    containers = _pod_spec(body)["containers"]
    return body, next(c for c in containers if c["name"] == "mlflow")


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container.get("env", [])}


@functools.cache
def _mlflow_server_params() -> dict[str, Any]:
    """The Deployment's `mlflow server` arguments, parsed by the installed MLflow's CLI."""
    from mlflow.cli import cli

    _, container = _mlflow_container()
    assert container["command"] == ["mlflow", "server"]
    env = {
        k: e["value"]
        for k, e in _env(container).items()
        if "value" in e and k.startswith("MLFLOW_")
    }
    saved = dict(os.environ)
    os.environ.update(env)  # the MLFLOW_* variables the server reads as options
    try:
        ctx = cli.commands["server"].make_context("server", list(container.get("args", [])))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return dict(ctx.params)


def test_mlflow_server_command_parses_under_installed_mlflow() -> None:
    import mlflow

    assert mlflow.__version__ == _pin("mlflow")
    params = _mlflow_server_params()
    assert params["backend_store_uri"].startswith("postgresql://")
    assert params["serve_artifacts"] is True
    assert params["artifacts_destination"].startswith("s3://")
    assert params["host"] == "0.0.0.0"
    _, container = _mlflow_container()
    assert params["port"] in {p["containerPort"] for p in container["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health", probe
    assert container["resources"]["limits"] and container["resources"]["requests"]
    # The image is the one cluster/Dockerfile.mlflow builds, at rayline's MLflow pin.
    assert container["image"].endswith(f"-mlflow:{_pin('mlflow')}")


def _tracking_uris() -> set[str]:
    uris = set()
    for doc in KUBERAY:
        for text in _strings(doc.body):
            uris.update(re.findall(r"https?://[a-z0-9.-]+\.svc\.cluster\.local:\d+", text))
    return uris


def test_mlflow_server_answers_the_tracking_uri_the_ray_pods_use() -> None:
    """MLflow 3 refuses Host headers outside --allowed-hosts (403): the pods' must pass."""
    from urllib.parse import urlparse

    from mlflow.server.security_utils import get_default_allowed_hosts, is_allowed_host_header

    raw = _mlflow_server_params()["allowed_hosts"]
    allowed = [h.strip() for h in raw.split(",")] if raw else get_default_allowed_hosts()
    uris = _tracking_uris()
    assert "http://mlflow.mlflow.svc.cluster.local:5000" in uris
    for uri in uris:
        host = urlparse(uri).netloc
        assert is_allowed_host_header(allowed, host), f"MLflow would refuse Host {host}"
    assert is_allowed_host_header(allowed, "localhost:5000")  # kubectl port-forward
    assert not is_allowed_host_header(allowed, "evil.example.com:5000")


# --------------------------------------------------------------------------- ray up


@functools.cache
def _ray_up_validator() -> jsonschema.Validator:
    # The installed Ray's file, found without importing Ray (seconds).
    spec = importlib.util.find_spec("ray")
    assert spec and spec.submodule_search_locations
    path = Path(next(iter(spec.submodule_search_locations))) / "autoscaler" / "ray-schema.json"
    schema = json.loads(path.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def ray_up_problems(config: dict[str, Any]) -> list[str]:
    errors = list(_ray_up_validator().iter_errors(config))
    problems = [f"ray-schema.json:\n{_format_errors(errors)}"] if errors else []
    # What Ray's validate_config checks after the schema.
    node_types = config.get("available_node_types") or {}
    if config.get("head_node_type") not in node_types:
        problems.append(
            f"head_node_type {config.get('head_node_type')!r} not in available_node_types"
        )
    total_min = sum(t.get("min_workers", 0) for t in node_types.values() if isinstance(t, dict))
    if total_min > config.get("max_workers", total_min):
        problems.append(f"the node types' min_workers add up to {total_min} > max_workers")
    for name, t in node_types.items():
        if isinstance(t, dict) and t.get("min_workers", 0) > t.get("max_workers", 1 << 30):
            problems.append(f"available_node_types.{name}: min_workers > max_workers")
    image = (config.get("docker") or {}).get("image", "")
    if image.startswith("rayproject/ray:") and not image.startswith(
        f"rayproject/ray:{_pin('ray')}-"
    ):
        problems.append(f"docker.image {image!r} is not Ray {_pin('ray')}")
    return problems


@pytest.mark.parametrize("doc", _params(RAY_UP))
def test_ray_up_config_is_valid(doc: Doc) -> None:
    problems = ray_up_problems(doc.body)
    assert not problems, f"{doc.id}:\n" + "\n".join(problems)


def test_misspelled_ray_up_key_fails() -> None:
    assert RAY_UP, "no ray up config in cluster/"
    config = copy.deepcopy(RAY_UP[0].body)
    config["idle_timeout_minute"] = config.pop("idle_timeout_minutes", 5)
    assert "'idle_timeout_minute' was unexpected" in "\n".join(ray_up_problems(config))
    config = copy.deepcopy(RAY_UP[0].body)
    node_type = next(t for t in config["available_node_types"].values() if "min_workers" in t)
    node_type["min_worker"] = node_type.pop("min_workers")
    assert "'min_worker' was unexpected" in "\n".join(ray_up_problems(config))
    config = copy.deepcopy(RAY_UP[0].body)
    config["docker"]["pull_before_run"] = "yes"
    assert "is not of type 'boolean'" in "\n".join(ray_up_problems(config))


# --------------------------------------------------------------------------- pipeline commands


@dataclass
class Invocation:
    """A pipeline command found in cluster/: where, how it runs, what it passes."""

    where: str
    program: str  # "train_pipeline", "rayline run", "rayline submit"
    args: list[str]
    on_cluster: bool  # runs as a Ray job in a copy of the repo (RayJob, `ray job submit`)
    cwd: str | None = None
    context: Doc | None = None


_ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_SEPARATORS = {"&&", "||", ";", "|", "&"}


def _shell_words(line: str) -> list[str]:
    for var in ("${PWD}", "$PWD", "${REPO_ROOT}", "$REPO_ROOT"):
        line = line.replace(var, CHECKOUT)
    lex = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lex.whitespace_split = True
    return list(lex)


def parse_commands(
    line: str, where: str, on_cluster: bool = False, context: Doc | None = None
) -> list[Invocation]:
    """The pipeline commands in one shell command line (cd, bash -c and ray job submit)."""
    found: list[Invocation] = []
    cwd = None
    words = _shell_words(line)
    simple: list[list[str]] = [[]]
    for w in words:
        if w in _SEPARATORS:
            simple.append([])
        else:
            simple[-1].append(w)
    for argv in simple:
        while argv and _ENV_ASSIGNMENT.match(argv[0]):
            argv = argv[1:]
        if not argv:
            continue
        prog = os.path.basename(argv[0])
        if prog == "cd" and len(argv) == 2:
            cwd = argv[1]
        elif prog in ("bash", "sh") and len(argv) >= 3 and argv[1] == "-c":
            found += parse_commands(argv[2], where, on_cluster, context)
        elif prog == "ray" and argv[1:3] == ["job", "submit"] and "--" in argv:
            rest = shlex.join(argv[argv.index("--") + 1 :])
            found += parse_commands(rest, where, True, context)
        elif prog.startswith("python") and len(argv) >= 2 and argv[1].endswith("train_pipeline.py"):
            found.append(Invocation(where, "train_pipeline", argv[2:], on_cluster, cwd, context))
        elif prog.startswith("python") and argv[1:3] == ["-m", "rayline"] and len(argv) > 3:
            found.append(
                Invocation(where, f"rayline {argv[3]}", argv[4:], on_cluster, cwd, context)
            )
        elif prog == "rayline" and len(argv) >= 2 and argv[1] in ("run", "submit", "retrain"):
            found.append(
                Invocation(where, f"rayline {argv[1]}", argv[2:], on_cluster, cwd, context)
            )
    return found


def _logical_lines(lines: list[str]) -> Iterator[str]:
    """Lines with their backslash continuations joined."""
    buf = ""
    for line in lines:
        stripped = line.rstrip()
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        yield buf + stripped
        buf = ""
    if buf:
        yield buf


_PIPELINE_COMMAND = re.compile(
    r"train_pipeline\.py|\brayline\s+(run|submit|retrain)\b|-m rayline\b"
)


def _commands_in_comments(path: Path) -> list[Invocation]:
    docs = [d for d in _docs() if d.path == path]
    comments = [
        re.sub(r"^\s*#\s?", "", line)
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.lstrip().startswith("#")
    ]
    found = []
    for line in _logical_lines(comments):
        if _PIPELINE_COMMAND.search(line):
            found += parse_commands(
                line, f"{path.name} (comment)", context=docs[0] if docs else None
            )
    return found


def _commands_in_readme(path: Path) -> list[Invocation]:
    blocks = re.findall(r"^```(?:bash|sh|shell|console)?\n(.*?)^```", path.read_text(), re.M | re.S)
    found = []
    for block in blocks:
        lines = [line for line in block.splitlines() if not line.lstrip().startswith("#")]
        for line in _logical_lines(lines):
            line = re.sub(r"\s+#.*$", "", line)
            if _PIPELINE_COMMAND.search(line):
                found += parse_commands(line, path.name)
    return found


def _entrypoints() -> list[Invocation]:
    found = []
    for doc in KUBERAY:
        spec = doc.body.get("spec") or {}
        for holder in (spec, spec.get("jobTemplate") or {}):
            if isinstance(holder.get("entrypoint"), str):
                found += parse_commands(holder["entrypoint"], doc.id, True, doc)
    return found


@functools.cache
def _invocations() -> tuple[Invocation, ...]:
    found = _entrypoints()
    for path in _manifest_files():
        found += _commands_in_comments(path)
    if README.is_file():
        found += _commands_in_readme(README)
    return tuple(found)


class _Stop(Exception):
    """Raised from the patched load_config: the command got as far as its config."""


@functools.cache
def _train_pipeline_module() -> Any:
    """jobs/train_pipeline.py as a module, for its own argparse and its load_config call.

    rayline.pipeline (Ray, torch, MLflow: seconds to import) is stubbed while the script
    loads: a command checked here stops at its config and never runs the pipeline.
    """
    spec = importlib.util.spec_from_file_location(
        "rayline_jobs_train_pipeline", REPO / "jobs" / "train_pipeline.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    stub = types.ModuleType("rayline.pipeline")

    def run_pipeline(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the pipeline must not run in a manifest test")

    stub.run_pipeline = run_pipeline  # type: ignore[attr-defined]
    saved = sys.modules.get("rayline.pipeline")
    sys.modules["rayline.pipeline"] = stub
    try:
        spec.loader.exec_module(module)
    finally:
        if saved is None:
            del sys.modules["rayline.pipeline"]
        else:
            sys.modules["rayline.pipeline"] = saved
    return module


def _config_and_overrides(inv: Invocation) -> tuple[str, list[str]]:
    """What the command would hand load_config, parsed by the command's own parser."""
    if inv.program == "train_pipeline":
        module = _train_pipeline_module()
        seen: dict[str, Any] = {}

        def capture(path: str, overrides: list[str] | None = None) -> Any:
            seen["args"] = (path, list(overrides or []))
            raise _Stop

        saved_env, saved_load = dict(os.environ), module.load_config
        module.load_config = capture
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                module.main(list(inv.args))
        except _Stop:
            pass
        except SystemExit as e:  # argparse refused the command line
            pytest.fail(
                f"{inv.where}: jobs/train_pipeline.py {shlex.join(inv.args)}: exit {e.code}\n{err.getvalue()}"
            )
        finally:
            module.load_config = saved_load
            os.environ.clear()
            os.environ.update(saved_env)
        assert "args" in seen, f"{inv.where}: train_pipeline.py never loaded a config"
        return seen["args"]
    import typer.main

    from rayline.cli import app

    # typer carries its own copy of click, hence duck typing rather than click's classes.
    group: Any = typer.main.get_command(app)
    name = inv.program.split()[1]
    command = group.commands.get(name)
    assert command is not None, f"{inv.where}: rayline has no '{name}' command"
    try:
        ctx = command.make_context(name, list(inv.args))
    except Exception as e:  # click's UsageError / BadParameter
        if not hasattr(e, "format_message"):
            raise
        pytest.fail(f"{inv.where}: rayline {name} {shlex.join(inv.args)}: {e.format_message()}")
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    config = next(ctx.params[p.name] for p in arguments if p.nargs == 1)
    overrides = next((ctx.params[p.name] for p in arguments if p.nargs == -1), None)
    return config, list(overrides or [])


def load_invocation(inv: Invocation, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The config the command would run with, through rayline's own loader."""
    if inv.cwd is not None:
        assert inv.cwd in REPO_LOCATIONS, (
            f"{inv.where}: cd {inv.cwd}: not where the image (cluster/Dockerfile) or "
            f"ray up (file_mounts) puts the repository: {sorted(REPO_LOCATIONS)}"
        )
    config, overrides = _config_and_overrides(inv)
    monkeypatch.chdir(REPO)
    return load_config(config, overrides)


def _is_remote_or_absolute(path: str) -> bool:
    return "://" in path or path.startswith("/")


def job_path_problems(inv: Invocation, cfg: Any) -> list[str]:
    """A Ray job runs in a temporary copy of the repo: relative data/storage would be lost."""
    if not inv.on_cluster:
        return []
    problems = []
    paths = cfg.data.path if isinstance(cfg.data.path, list) else [cfg.data.path]
    for p in paths:
        if not _is_remote_or_absolute(p):
            problems.append(f"data.path {p!r} is relative: the job's copy of the repo has no data/")
    if not _is_remote_or_absolute(cfg.runtime.storage_path):
        problems.append(
            f"runtime.storage_path {cfg.runtime.storage_path!r} is relative: the job's "
            "temporary directory is not kept"
        )
    if cfg.registry.tracking_uri is None:
        env_set = inv.context is not None and "MLFLOW_TRACKING_URI" in {
            e["name"]
            for _, cluster in _cluster_specs(inv.context.body)
            for e in cluster["headGroupSpec"]["template"]["spec"]["containers"][0].get("env", [])
        }
        if not env_set:
            problems.append("no registry.tracking_uri and no MLFLOW_TRACKING_URI on the head pod")
    return problems


def _invocation_params() -> list[Any]:
    return [
        pytest.param(inv, id=f"{inv.where}:{i}:{inv.program}")
        for i, inv in enumerate(_invocations())
    ]


@pytest.mark.parametrize("inv", _invocation_params())
def test_pipeline_command_loads_its_config(
    inv: Invocation, monkeypatch: pytest.MonkeyPatch
) -> None:
    try:
        cfg = load_invocation(inv, monkeypatch)
    except ConfigError as e:
        pytest.fail(f"{inv.where}: {inv.program} {shlex.join(inv.args)}\n{e}")
    problems = job_path_problems(inv, cfg)
    assert not problems, f"{inv.where}: {shlex.join(inv.args)}\n" + "\n".join(problems)


def test_pipeline_commands_are_found() -> None:
    by_where = {inv.where for inv in _invocations()}
    entrypoints = [inv for inv in _invocations() if inv.context and inv.where == inv.context.id]
    assert entrypoints, "no RayJob entrypoint found"
    assert all(inv.cwd == "/home/ray/rayline" for inv in entrypoints)
    assert "ray-up.yaml (comment)" in by_where
    assert "README.md" in by_where
    # The RayCronJob's entrypoint and the README's cron line run `rayline retrain`.
    retrains = [inv for inv in _invocations() if inv.program == "rayline retrain"]
    assert any(inv.context and inv.context.kind == "RayCronJob" for inv in retrains)


def test_bad_override_in_entrypoint_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    inv = next(inv for inv in _entrypoints() if inv.program == "train_pipeline")
    for typo, needle in (
        ("train.num_worker=4", "train.num_worker: unknown key; did you mean 'num_workers'?"),
        ("trian.epochs=3", "trian"),
        ("train.num_workers=four", "train.num_workers"),
    ):
        broken = Invocation(inv.where, inv.program, [*inv.args, typo], True, inv.cwd, inv.context)
        with pytest.raises(ConfigError, match=re.escape(needle)):
            load_invocation(broken, monkeypatch)


def test_bad_override_in_cronjob_entrypoint_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    inv = next(inv for inv in _entrypoints() if inv.program == "rayline retrain")
    for typo, needle in (
        ("retrain.max_age=soon", "retrain.max_age"),
        ("retrain.window=last7", "retrain.window"),
        ("retrain.min_new_row=5", "did you mean 'min_new_rows'"),
    ):
        broken = Invocation(inv.where, inv.program, [*inv.args, typo], True, inv.cwd, inv.context)
        with pytest.raises(ConfigError, match=re.escape(needle)):
            load_invocation(broken, monkeypatch)


def test_bad_entrypoint_shapes_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = _first("RayJob")
    entry = doc.body["spec"]["entrypoint"]
    # A flag train_pipeline.py does not have (argparse would take a prefix of --config).
    (inv,) = parse_commands(entry.replace("--config", "--cfg"), doc.id, True, doc)
    with pytest.raises(pytest.fail.Exception, match="exit 2"):
        load_invocation(inv, monkeypatch)
    # A config path that is not in the repository.
    (inv,) = parse_commands(entry.replace("demo.yaml", "dmeo.yaml"), doc.id, True, doc)
    with pytest.raises(ConfigError, match="does not exist"):
        load_invocation(inv, monkeypatch)
    # The repository is not where the image puts it.
    (inv,) = parse_commands(entry.replace("/home/ray/rayline", "/home/ray/app"), doc.id, True, doc)
    with pytest.raises(AssertionError, match="cd /home/ray/app"):
        load_invocation(inv, monkeypatch)
    # A relative data path in a job: lost in the job's temporary copy of the repo.
    (inv,) = parse_commands(
        re.sub(r"data\.path=\S+", "data.path=data/breast_cancer", entry), doc.id, True, doc
    )
    cfg = load_invocation(inv, monkeypatch)
    assert any("data.path" in p for p in job_path_problems(inv, cfg))


def test_rayline_cli_commands_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    """`rayline run|submit CONFIG k=v` lines (none in cluster/ yet) go through the real CLI."""
    line = (
        "RAY_AUTH_MODE=token rayline submit jobs/configs/demo.yaml --address "
        "http://127.0.0.1:8265 train.num_workers=2 data.path=$PWD/data/breast_cancer"
    )
    (inv,) = parse_commands(line, "example")
    assert inv.program == "rayline submit"
    cfg = load_invocation(inv, monkeypatch)
    assert cfg.train.num_workers == 2
    assert cfg.data.path == f"{CHECKOUT}/data/breast_cancer"
    (inv,) = parse_commands("rayline run jobs/configs/demo.yaml train.epochss=2", "example")
    with pytest.raises(ConfigError, match="epochss"):
        load_invocation(inv, monkeypatch)


# --------------------------------------------------------------------------- images


def _dockerfile(name: str) -> str:
    return (CLUSTER / name).read_text(encoding="utf-8")


def test_dockerfile_builds_the_image_the_manifests_expect() -> None:
    text = _dockerfile("Dockerfile")
    froms = re.findall(r"(?im)^FROM\s+(\S+)", text)
    assert froms == [f"rayproject/ray:{_pin('ray')}-py311-gpu"]
    workdir = re.findall(r"(?im)^WORKDIR\s+(\S+)", text)
    assert workdir and workdir[-1] == "/home/ray/rayline"  # the RayJob entrypoint's cd
    assert re.search(r"(?m)^COPY\s+--chown=ray:users\s+\.\s+\./?$", text)
    assert re.search(r"pip install [^\n]*-c constraints\.txt \.", text)
    # Every KubeRay pod runs the image this Dockerfile builds, at rayline's version.
    from rayline import __version__

    for doc in KUBERAY:
        for _, cluster in _cluster_specs(doc.body):
            for where, template in _pod_templates(cluster, doc.id):
                image = template["spec"]["containers"][0]["image"]
                assert image.endswith(f"/rayline:{__version__}"), f"{where}: {image}"


def test_dockerignore_keeps_local_state_out_of_the_image() -> None:
    entries = {
        line.strip().rstrip("/")
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    for needed in (".venv", "data", "rayline-runs", "mlruns", ".git"):
        assert needed in entries, needed
    assert {"**/__pycache__", "**/*.egg-info"} <= entries


def test_mlflow_dockerfile_matches_the_pins() -> None:
    text = _dockerfile("Dockerfile.mlflow")
    assert re.findall(r"(?im)^FROM\s+(\S+)", text) == [f"ghcr.io/mlflow/mlflow:v{_pin('mlflow')}"]
    assert f"boto3=={_pin('boto3')}" in text
    assert re.search(r"psycopg2-binary==\d", text)
