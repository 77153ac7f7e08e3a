"""Regenerate the vendored KubeRay schemas in this directory from the CRD files.

    .venv/bin/python tests/data/kuberay-crds/update.py [CRD_DIR]

CRD_DIR defaults to ../shared/kuberay-crds (beside the repository), which holds the
CustomResourceDefinitions of KubeRay v1.7.0 (ray-operator/config/crd/bases/ in
ray-project/kuberay). For each CRD this keeps the OpenAPI v3 schema of its `v1` version
(spec.versions[].schema.openAPIV3Schema; the deprecated v1alpha1 versions are left out)
and writes <kind>.v1.json, plus SOURCES.json with the sha256 of each CRD file and of
each schema file written. tests/unit/test_manifests.py validates the manifests in cluster/
against these files, and checks the hashes: the schema files against SOURCES.json, and
CRD_DIR's files against it when CRD_DIR exists.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
DEFAULT_CRD_DIR = HERE.parents[2].parent / "shared" / "kuberay-crds"
KUBERAY_VERSION = "v1.7.0"
VERSIONS = ("v1",)


def extract(crd_dir: Path) -> dict[str, Any]:
    """{file name: content} for every schema file and SOURCES.json, from crd_dir."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    files: dict[str, Any] = {}
    sources = {"kuberay": KUBERAY_VERSION, "crds": {}}
    for path in sorted(crd_dir.glob("ray.io_*.yaml")):
        raw = path.read_bytes()
        crd = yaml.load(raw, Loader=loader)
        spec = crd["spec"]
        kind = spec["names"]["kind"]
        versions = []
        for version in spec["versions"]:
            if version["name"] not in VERSIONS or not version.get("served", True):
                continue
            name = f"{kind.lower()}.{version['name']}.json"
            files[name] = version["schema"]["openAPIV3Schema"]
            versions.append(version["name"])
        sources["crds"][path.name] = {
            "kind": kind,
            "group": spec["group"],
            "versions": versions,
            "sha256": hashlib.sha256(raw).hexdigest(),
        }
    if not sources["crds"]:
        raise SystemExit(f"no ray.io_*.yaml CRD files in {crd_dir}")
    sources["schemas"] = {name: sha256(dump(content)) for name, content in files.items()}
    files["SOURCES.json"] = sources
    return files


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def dump(content: Any) -> str:
    return json.dumps(content, indent=0, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    crd_dir = Path(argv[0]) if argv else DEFAULT_CRD_DIR
    for old in HERE.glob("*.json"):
        old.unlink()
    for name, content in extract(crd_dir).items():
        (HERE / name).write_text(dump(content), encoding="utf-8")
        print(f"wrote {HERE / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
