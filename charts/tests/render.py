"""Render the teledrop chart with Helm's own Go library (helm-python-sdk).

Used by the tests (import render) and as a tool:

    python charts/tests/render.py [-f values.yaml] [-n namespace]   # like `helm template`
    python charts/tests/render.py --write-dev-overlay               # regenerate k8s/overlays/dev/teledrop.yaml
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "teledrop"
DEV_OVERLAY = ROOT / "k8s" / "overlays" / "dev"
DEV_NAMESPACE = "teledrop-dev"
RELEASE = "teledrop"


def load_values(path: Path | str | None) -> dict[str, Any] | None:
    if path is None:
        return None
    return yaml.safe_load(Path(path).read_text()) or {}


def render_templates(
    values: dict[str, Any] | None = None,
    *,
    name: str = RELEASE,
    namespace: str = RELEASE,
    upgrade: bool = False,
) -> dict[str, str]:
    """Template path -> rendered text (NOTES.txt included), as Helm renders an install."""
    with helm.Chart.load(CHART) as chart:
        return chart.render(
            values,
            name=name,
            namespace=namespace,
            is_install=not upgrade,
            is_upgrade=upgrade,
        )


def crd_texts() -> list[tuple[str, str]]:
    with helm.Chart.load(CHART) as chart:
        return [(c["filename"], c["data"]) for c in chart.crds]


def render_yaml(
    values: dict[str, Any] | None = None,
    *,
    name: str = RELEASE,
    namespace: str = RELEASE,
    include_crds: bool = False,
) -> str:
    """One multi-document YAML stream, like `helm template [--include-crds]`."""
    parts: list[str] = []
    if include_crds:
        for filename, data in crd_texts():
            parts.append(f"# Source: {filename}\n{data.strip()}\n")
    for path, text in sorted(render_templates(values, name=name, namespace=namespace).items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in text.split("\n---"):
            body = "\n".join(line.rstrip() for line in doc.splitlines() if line.strip())
            if body and yaml.safe_load(body) is not None:
                parts.append(f"# Source: {path}\n{body}\n")
    return "---\n".join(parts)


def render_docs(values: dict[str, Any] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(render_yaml(values, **kwargs)) if d]


def notes(values: dict[str, Any] | None = None, **kwargs: Any) -> str:
    return next(t for p, t in render_templates(values, **kwargs).items() if p.endswith("NOTES.txt"))


DEV_OVERLAY_HEADER = """\
# GENERATED from charts/teledrop with k8s/overlays/dev/values.yaml; do not edit.
# Regenerate: <k8s-venv>/bin/python charts/tests/render.py --write-dev-overlay
"""


def dev_overlay_text() -> str:
    values = load_values(DEV_OVERLAY / "values.yaml")
    return DEV_OVERLAY_HEADER + render_yaml(
        values, name=RELEASE, namespace=DEV_NAMESPACE, include_crds=True
    )


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-f", "--values", help="values file")
    p.add_argument("-n", "--namespace", default=RELEASE)
    p.add_argument("--name", default=RELEASE)
    p.add_argument("--include-crds", action="store_true")
    p.add_argument("--write-dev-overlay", action="store_true", help="regenerate k8s/overlays/dev/teledrop.yaml")
    args = p.parse_args(argv)
    if args.write_dev_overlay:
        out = DEV_OVERLAY / "teledrop.yaml"
        out.write_text(dev_overlay_text())
        print(f"wrote {out.relative_to(ROOT)}")
        return 0
    sys.stdout.write(
        render_yaml(load_values(args.values), name=args.name, namespace=args.namespace, include_crds=args.include_crds)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
