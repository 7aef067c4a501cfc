"""The Dockerfile, checked statically (no Docker engine here): hadolint with
no findings, and the shape the chart relies on."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

DOCKERFILE = ROOT / "Dockerfile"


def hadolint_exe() -> str:
    exe = Path(sys.executable).with_name("hadolint")
    return str(exe) if exe.exists() else (shutil.which("hadolint") or "hadolint")


def test_hadolint_finds_nothing():
    # A committed .hadolint.yaml (with a reason per ignored rule) would be picked up here.
    proc = subprocess.run([hadolint_exe(), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_image_shape():
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M | re.I)
    assert len(stages) >= 3, "multi-stage: dependency layer, build, runtime"
    assert "cargo chef cook" in text, "dependencies compile in their own cached layer"
    assert re.search(r"cargo build --release --locked -p teledrop", text)
    runtime = text[text.rindex("\nFROM ") + 1:]
    assert "distroless" in runtime.splitlines()[0]
    user = re.findall(r"^USER\s+(\S+)", runtime, re.M)
    assert user and re.fullmatch(r"[1-9][0-9]*(:[0-9]+)?", user[-1]), "numeric non-root USER"
    assert re.search(r'^ENTRYPOINT \["teledrop"\]$', runtime, re.M)
    for label in ["title", "description", "version", "revision", "created", "licenses"]:
        assert f"org.opencontainers.image.{label}=" in runtime, label


def test_dockerignore_keeps_the_context_small():
    lines = (ROOT / ".dockerignore").read_text().split()
    assert "*" in lines and "!crates/" in lines and "!Cargo.lock" in lines
