"""Shared fixtures: the chart rendered with Helm's library for the value sets
under test, and the k8s/ kustomizations built with `kubectl kustomize`."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

import render

ROOT = render.ROOT
CHART = render.CHART
CI_VALUES = CHART / "ci"
NAMESPACE = "teledrop"

# Value sets rendered by the tests: the chart defaults, every ci/*-values.yaml
# file (the full-featured one, values-created Secrets) and the dev overlay's.
VALUE_SETS: dict[str, Path | None] = {"default": None}
VALUE_SETS.update({p.name.removesuffix("-values.yaml"): p for p in sorted(CI_VALUES.glob("*-values.yaml"))})
VALUE_SETS["dev-overlay"] = render.DEV_OVERLAY / "values.yaml"

KUSTOMIZATIONS = sorted(p.parent for p in (ROOT / "k8s").rglob("kustomization.yaml"))


def kubectl() -> str:
    exe = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if not exe:
        pytest.fail("kubectl not found (scripts/test.sh installs Debian's kubernetes-client); set KUBECTL")
    return exe


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Value-set name -> rendered manifests (NOTES.txt and CRDs excluded)."""
    out = {}
    for name, path in VALUE_SETS.items():
        ns = render.DEV_NAMESPACE if name == "dev-overlay" else NAMESPACE
        out[name] = render.render_docs(render.load_values(path), namespace=ns)
    return out


@pytest.fixture(scope="session")
def rendered_text() -> dict[str, str]:
    out = {}
    for name, path in VALUE_SETS.items():
        ns = render.DEV_NAMESPACE if name == "dev-overlay" else NAMESPACE
        out[name] = render.render_yaml(render.load_values(path), namespace=ns)
    return out


@pytest.fixture(scope="session")
def kustomized() -> dict[str, str]:
    """k8s/ kustomization dir (relative) -> `kubectl kustomize` output."""
    out = {}
    for d in KUSTOMIZATIONS:
        proc = subprocess.run([kubectl(), "kustomize", str(d)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"kubectl kustomize {d.relative_to(ROOT)} failed:\n{proc.stderr}"
        out[str(d.relative_to(ROOT))] = proc.stdout
    return out


def load_all(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def crd_files() -> list[Path]:
    files = sorted((CHART / "crds").glob("*.yaml"))
    files += sorted((ROOT / "crds").glob("*.yaml"))
    return files


def crd_schemas() -> dict[tuple[str, str, str], dict[str, Any]]:
    """(group, version, kind) -> openAPIV3Schema, from the chart's CRDs."""
    out = {}
    for f in sorted((CHART / "crds").glob("*.yaml")):
        for crd in load_all(f.read_text()):
            for v in crd["spec"]["versions"]:
                out[(crd["spec"]["group"], v["name"], crd["spec"]["names"]["kind"])] = v["schema"]["openAPIV3Schema"]
    return out


POD_OWNERS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}


def pod_specs(docs: list[dict[str, Any]]):
    """(doc, pod spec) for every workload (CronJobs included)."""
    for d in docs:
        if d["kind"] in POD_OWNERS:
            yield d, d["spec"]["template"]["spec"]
        elif d["kind"] == "CronJob":
            yield d, d["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def containers(spec: dict[str, Any]):
    yield from spec.get("initContainers") or []
    yield from spec.get("containers") or []


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env") or []}


def assert_restricted(docs: list[dict[str, Any]], where: str) -> None:
    """Restricted Pod Security Standard, for every container: non-root numeric
    uid, read-only root filesystem, no privilege escalation, all capabilities
    dropped, RuntimeDefault seccomp; no host namespaces or hostPath volumes."""
    found = False
    for doc, spec in pod_specs(docs):
        found = True
        pod_sc = spec.get("securityContext") or {}
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), doc
        for v in spec.get("volumes") or []:
            assert "hostPath" not in v, (where, doc["metadata"]["name"], v)
        for c in containers(spec):
            at = f"{where}: {doc['kind']}/{doc['metadata']['name']} container {c['name']}"
            sc = c.get("securityContext") or {}
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, at
            uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
            assert isinstance(uid, int) and uid > 0, at
            assert sc.get("readOnlyRootFilesystem") is True, at
            assert sc.get("allowPrivilegeEscalation") is False, at
            assert sc.get("privileged", False) is False, at
            assert "ALL" in (sc.get("capabilities") or {}).get("drop", []), at
            assert not (sc.get("capabilities") or {}).get("add"), at
            seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
            assert seccomp == "RuntimeDefault", at
    assert found, f"{where}: no workloads"
