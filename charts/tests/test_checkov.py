"""checkov on everything we ship: the rendered chart, the k8s/ kustomizations
and the Dockerfile. No failed check beyond the committed, explained skips."""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

SKIPS_FILE = Path(__file__).with_name("checkov-skips.yaml")


def checkov_exe() -> str:
    exe = Path(sys.executable).with_name("checkov")
    return str(exe) if exe.exists() else "checkov"


@pytest.fixture(scope="module")
def skips():
    entries = yaml.safe_load(SKIPS_FILE.read_text())
    for e in entries:
        assert set(e) <= {"id", "reason", "resources", "files"}, e
        assert e.get("reason", "").strip(), f"{e['id']}: a skip needs a reason"
    return entries


@pytest.fixture(scope="module")
def failures(rendered_text, kustomized, tmp_path_factory):
    scan = tmp_path_factory.mktemp("checkov")
    for name, text in rendered_text.items():
        (scan / f"chart-{name}.yaml").write_text(text)
    for kdir, text in kustomized.items():
        (scan / f"kustomize-{kdir.replace('/', '-')}.yaml").write_text(text)
    (scan / "Dockerfile").write_bytes((ROOT / "Dockerfile").read_bytes())
    env = dict(os.environ, BC_SKIP_MAPPING="TRUE", CHECKOV_RUN_SCA_PACKAGE_SCAN_V2="false")
    proc = subprocess.run(
        [checkov_exe(), "-d", str(scan), "--framework", "kubernetes", "dockerfile",
         "--output", "json", "--quiet", "--compact", "--skip-download", "--soft-fail"],
        capture_output=True, text=True, timeout=600, env=env, cwd=scan,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = json.loads(proc.stdout)
    if isinstance(reports, dict):
        reports = [reports]
    types = {r.get("check_type") for r in reports}
    assert {"kubernetes", "dockerfile"} <= types, f"checkov scanned only {types}"
    for r in reports:
        assert r["summary"]["parsing_errors"] == 0, r["summary"]
        assert r["summary"]["passed"] > 0, r["summary"]
    return [
        (c["check_id"], c["resource"], Path(c["file_path"]).name, c["check_name"])
        for r in reports
        for c in r["results"]["failed_checks"]
    ]


def matches(skip, check_id, resource, file) -> bool:
    return (
        skip["id"] == check_id
        and any(fnmatch.fnmatchcase(resource, p) for p in skip.get("resources", ["*"]))
        and any(fnmatch.fnmatchcase(file, p) for p in skip.get("files", ["*"]))
    )


def test_no_unexplained_checkov_failures(failures, skips):
    unexplained = [f for f in failures if not any(matches(s, *f[:3]) for s in skips)]
    assert not unexplained, "checkov failures not in checkov-skips.yaml:\n" + "\n".join(
        f"  {cid} {res} ({file}): {name}" for cid, res, file, name in unexplained
    )


def test_every_skip_is_still_needed(failures, skips):
    stale = [s["id"] for s in skips if not any(matches(s, *f[:3]) for f in failures)]
    assert not stale, f"checkov-skips.yaml entries that match no failure any more (remove them): {stale}"
