"""Postgres connections: every pod that opens the catalog says how many
connections it may hold (TELEDROP_DB_MAX_CONNECTIONS), and with the default
values and every autoscaler at its maximum their sum stays under Postgres's
default max_connections (100, of which 3 are reserved for superusers), as
the arithmetic in values.yaml says."""

from __future__ import annotations

import re
from typing import Any

import render
from conftest import CHART, containers, env_of, find, pod_specs

POSTGRES_MAX_CONNECTIONS = 100
SUPERUSER_RESERVED = 3


def most_replicas(docs: list[dict[str, Any]], workload: dict[str, Any]) -> int:
    """The most pods a workload can run: its HPA's or ScaledObject's maximum,
    else its replica count (a Job runs one pod at a time)."""
    name = workload["metadata"]["name"]
    if workload["kind"] == "Job":
        return workload["spec"].get("parallelism", 1)
    for hpa in find(docs, "HorizontalPodAutoscaler"):
        if hpa["spec"]["scaleTargetRef"]["name"] == name:
            return hpa["spec"]["maxReplicas"]
    for so in find(docs, "ScaledObject"):
        if so["spec"]["scaleTargetRef"]["name"] == name:
            return so["spec"]["maxReplicaCount"]
    return workload["spec"].get("replicas", 1)


def connection_budget(docs: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """Workload name -> (most pods, connections per pod) of every catalog user."""
    out = {}
    for doc, spec in pod_specs(docs):
        for c in containers(spec):
            env = env_of(c)
            if "DATABASE_URL_FILE" not in env:
                continue
            name = doc["metadata"]["name"]
            assert "TELEDROP_DB_MAX_CONNECTIONS" in env, f"{name} opens the catalog with no pool size"
            out[name] = (most_replicas(docs, doc), int(env["TELEDROP_DB_MAX_CONNECTIONS"]["value"]))
    return out


def test_default_install_at_full_scale_stays_under_postgres_max_connections(rendered):
    budget = connection_budget(rendered["default"])
    assert set(budget) == {"teledrop-worker", "teledrop-links", "teledrop-controller", "teledrop-migrate"}
    total = sum(pods * pool for pods, pool in budget.values())
    assert total < POSTGRES_MAX_CONNECTIONS - SUPERUSER_RESERVED, budget
    # values.yaml documents the same sum.
    documented = re.search(r"^#\s+total (\d+) <", (CHART / "values.yaml").read_text(), re.M)
    assert documented and int(documented.group(1)) == total, (documented, total, budget)


def test_pool_sizes_follow_the_values():
    docs = render.render_docs({"worker": {"dbMaxConnections": 5}, "links": {"dbMaxConnections": 4},
                               "controller": {"dbMaxConnections": 3}, "migrations": {"dbMaxConnections": 2}})
    assert {n: pool for n, (_, pool) in connection_budget(docs).items()} == {
        "teledrop-worker": 5, "teledrop-links": 4, "teledrop-controller": 3, "teledrop-migrate": 2}


def test_ingress_never_connects(rendered):
    for doc, spec in pod_specs(rendered["default"]):
        if doc["metadata"]["name"] == "teledrop-ingress":
            assert "TELEDROP_DB_MAX_CONNECTIONS" not in env_of(spec["containers"][0])
