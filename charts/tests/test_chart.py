"""The chart, rendered with Helm's own library: lint, values schema, and the
properties every install must have (Restricted PSS, probes, least-privilege
RBAC, secrets never in literals, the wiring of each optional feature)."""

from __future__ import annotations

import base64
import re
from typing import Any

import helm_python as helm
import pytest
import yaml

import render
from conftest import (
    CHART,
    NAMESPACE,
    VALUE_SETS,
    assert_restricted,
    containers,
    env_of,
    find,
    one,
    pod_specs,
)

FULL = render.load_values(CHART / "ci" / "full-values.yaml")
SECRETS = render.load_values(CHART / "ci" / "secrets-values.yaml")
ROLES = ["ingress", "worker", "links", "controller"]


# ---------------------------------------------------------------- lint & schema


@pytest.mark.parametrize("name", VALUE_SETS)
def test_lint_reports_no_errors(name):
    report = helm.lint(CHART, render.load_values(VALUE_SETS[name]), namespace=NAMESPACE, kube_version="v1.33.0")
    errors = [m for m in report["messages"] if m["severity"] >= 3]
    assert not report["errors"] and not errors, report


@pytest.mark.parametrize("name", VALUE_SETS)
def test_lint_strict_has_no_warnings(name):
    report = helm.lint(
        CHART, render.load_values(VALUE_SETS[name]), namespace=NAMESPACE, strict=True, kube_version="v1.33.0"
    )
    assert not [m for m in report["messages"] if m["severity"] >= 2], report


def test_every_value_set_renders(rendered):
    for name, docs in rendered.items():
        kinds = {d["kind"] for d in docs}
        assert {"Deployment", "Service", "Job"} <= kinds, (name, kinds)


@pytest.mark.parametrize(
    "bad",
    [
        {"publicURL": "https://files.example.com"},  # misspelled top-level key
        {"workers": {"replicas": 3}},  # misspelled role
        {"worker": {"replica": 3}},  # misspelled nested key
        {"worker": {"replicas": "three"}},  # wrong type
        {"log": {"format": "xml"}},  # not one of the enum
        {"webhook": {"maxConnections": 101}},  # out of Telegram's range
    ],
)
def test_values_schema_rejects(bad):
    with pytest.raises(helm.HelmValuesError):
        render.render_templates(bad)
    report = helm.lint(CHART, bad)
    assert report["errors"], report


def test_values_schema_is_closed_at_the_top_level():
    schema = helm.Chart.load(CHART).schema
    assert schema["additionalProperties"] is False
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(defaults) <= set(schema["properties"]), set(defaults) - set(schema["properties"])


def test_values_yaml_is_documented_line_by_line():
    """Every key in values.yaml has a comment right above it, or belongs to a
    block whose parent carries a `# --` comment (a securityContext, resources…)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, bool]] = []  # (indent, documented as a block) of the enclosing keys
    undocumented = []
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)(- )?([A-Za-z][\w.-]*):", line)
        if not m:
            continue
        indent = len(m.group(1)) + (2 if m.group(2) else 0)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        above = lines[i - 1].strip() if i else ""
        commented = above.startswith("#") and not m.group(2)
        if not commented and not any(block for _, block in stack) and not m.group(2):
            undocumented.append(f"values.yaml:{i + 1}: {line.strip()}")
        stack.append((indent, above.startswith("# --") or any(block for _, block in stack)))
    assert not undocumented, "keys without a comment:\n" + "\n".join(undocumented)


# ---------------------------------------------------------------- pods


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_container_is_restricted(rendered, name):
    assert_restricted(rendered[name], name)


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_deployment_has_probes_and_requests(rendered, name):
    deployments = find(rendered[name], "Deployment")
    assert deployments
    for d in deployments:
        for c in containers(d["spec"]["template"]["spec"]):
            where = f"{name}: {d['metadata']['name']}/{c['name']}"
            assert c.get("livenessProbe"), where
            assert c.get("readinessProbe"), where
            requests = (c.get("resources") or {}).get("requests") or {}
            assert requests.get("cpu") and requests.get("memory"), where


PUBLIC_ROLES = {"ingress", "links"}
ADMIN_PORT = {"name": "admin", "containerPort": 9090, "protocol": "TCP"}
HTTP_PORT = {"name": "http", "containerPort": 8080, "protocol": "TCP"}


@pytest.mark.parametrize("name", VALUE_SETS)
def test_teledrop_roles_probe_healthz_and_readyz_on_the_admin_port(rendered, name):
    for role in ROLES:
        d = one(rendered[name], "Deployment", f"teledrop-{role}")
        c = d["spec"]["template"]["spec"]["containers"][0]
        assert c["args"] == [role]
        for probe, path in [("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]:
            assert c[probe]["httpGet"] == {"path": path, "port": "admin"}, (role, probe)
        env = env_of(c)
        assert env["TELEDROP_ADMIN_LISTEN"]["value"] == "0.0.0.0:9090"
        if role in PUBLIC_ROLES:
            assert c["ports"] == [HTTP_PORT, ADMIN_PORT]
            assert env["TELEDROP_LISTEN"]["value"] == "0.0.0.0:8080"
        else:
            # The worker and the controller have no product routes.
            assert c["ports"] == [ADMIN_PORT]
            assert "TELEDROP_LISTEN" not in env


@pytest.mark.parametrize("name", VALUE_SETS)
def test_public_services_expose_only_the_product_port(rendered, name):
    services = {s["metadata"]["name"]: s for s in find(rendered[name], "Service")}
    for role in ROLES:
        admin = services[f"teledrop-{role}-admin"]["spec"]["ports"]
        assert admin == [{"name": "admin", "port": 9090, "targetPort": "admin", "protocol": "TCP"}], role
        if role in PUBLIC_ROLES:
            public = services[f"teledrop-{role}"]["spec"]["ports"]
            assert public == [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}], role
            assert "teledrop.dev/metrics" not in services[f"teledrop-{role}"]["metadata"]["labels"]
        else:
            assert f"teledrop-{role}" not in services, role


@pytest.mark.parametrize("name", VALUE_SETS)
def test_only_the_controller_gets_an_api_token(rendered, name):
    docs = rendered[name]
    for doc, spec in pod_specs(docs):
        is_controller = doc["metadata"]["name"].endswith("-controller")
        assert spec.get("automountServiceAccountToken") is is_controller, doc["metadata"]["name"]
        assert spec.get("serviceAccountName"), doc["metadata"]["name"]
    for sa in find(docs, "ServiceAccount"):
        assert sa["automountServiceAccountToken"] is sa["metadata"]["name"].endswith("-controller"), sa


def test_topology_spread_and_pdbs(rendered):
    docs = rendered["default"]
    for role in ROLES:
        spec = one(docs, "Deployment", f"teledrop-{role}")["spec"]["template"]["spec"]
        keys = {c["topologyKey"] for c in spec["topologySpreadConstraints"]}
        assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
        pdb = one(docs, "PodDisruptionBudget", f"teledrop-{role}")
        assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == role


def test_hpas_for_ingress_worker_links(rendered):
    docs = rendered["default"]
    assert {h["spec"]["scaleTargetRef"]["name"] for h in find(docs, "HorizontalPodAutoscaler")} == {
        "teledrop-ingress",
        "teledrop-worker",
        "teledrop-links",
    }
    for role in ["ingress", "worker", "links"]:
        assert "replicas" not in one(docs, "Deployment", f"teledrop-{role}")["spec"], role
    assert one(docs, "Deployment", "teledrop-controller")["spec"]["replicas"] == 2


def test_otel_endpoint_is_wired_to_every_role(rendered):
    for role in ROLES:
        c = one(rendered["full"], "Deployment", f"teledrop-{role}")["spec"]["template"]["spec"]["containers"][0]
        env = env_of(c)
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == FULL["otel"]["endpoint"]
        assert env["OTEL_SERVICE_NAME"]["value"] == f"teledrop-{role}"
        c = one(rendered["default"], "Deployment", f"teledrop-{role}")["spec"]["template"]["spec"]["containers"][0]
        assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env_of(c)


def test_role_environments(rendered):
    docs = rendered["full"]

    def env(role):
        c = one(docs, "Deployment", f"teledrop-{role}")["spec"]["template"]["spec"]["containers"][0]
        return env_of(c)

    ingress = env("ingress")
    assert {"TELEGRAM_BOT_TOKEN_FILE", "TELEDROP_WEBHOOK_SECRET_FILE", "NATS_URL", "TELEDROP_NATS_STREAM",
            "TELEDROP_NATS_PREFIX", "TELEDROP_PUBLISH_TIMEOUT", "RUST_LOG", "TELEDROP_LOG_FORMAT"} <= set(ingress)
    assert "DATABASE_URL_FILE" not in ingress
    worker = env("worker")
    assert {"TELEGRAM_BOT_TOKEN_FILE", "DATABASE_URL_FILE", "TELEDROP_STORAGE_URL", "AWS_ENDPOINT_URL", "AWS_REGION",
            "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "NATS_URL", "TELEDROP_PUBLIC_URL", "TELEDROP_MAX_FILE_SIZE",
            "TELEDROP_WORKER_CONCURRENCY", "TELEDROP_ALLOWED_USERS", "TELEDROP_RATE_LIMIT",
            "TELEDROP_USER_CONCURRENCY", "TELEDROP_DRAIN_TIMEOUT"} <= set(worker)
    assert worker["TELEDROP_ALLOWED_USERS"]["value"] == "11111111,22222222"
    assert worker["TELEDROP_RATE_LIMIT"]["value"] == "20"
    assert worker["TELEDROP_USER_CONCURRENCY"]["value"] == "3"
    assert worker["TELEDROP_PUBLIC_URL"]["value"] == "https://files.example.org"
    links = env("links")
    assert {"DATABASE_URL_FILE", "TELEDROP_STORAGE_URL", "TELEDROP_PUBLIC_URL", "AWS_ACCESS_KEY_ID"} <= set(links)
    assert "TELEGRAM_BOT_TOKEN_FILE" not in links and "NATS_URL" not in links
    controller = env("controller")
    assert controller["TELEDROP_LEASE_NAME"]["value"] == "teledrop-controller"
    assert controller["TELEDROP_LEASE_NAMESPACE"]["value"] == NAMESPACE
    assert controller["TELEDROP_WATCH_NAMESPACE"]["value"] == NAMESPACE
    assert controller["TELEDROP_ORPHAN_GRACE"]["value"] == "24h"
    assert controller["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert controller["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"


def test_secret_files_are_mounted_where_the_file_variables_point(rendered):
    for name in ["default", "full"]:
        for doc, spec in pod_specs(rendered[name]):
            volumes = {v["name"]: v for v in spec.get("volumes") or []}
            for c in containers(spec):
                env = env_of(c)
                for var in ["TELEGRAM_BOT_TOKEN_FILE", "TELEDROP_WEBHOOK_SECRET_FILE", "DATABASE_URL_FILE"]:
                    if var not in env:
                        continue
                    path = env[var]["value"]
                    mount = next(m for m in c["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
                    assert mount.get("readOnly") is True
                    files = [
                        item["path"]
                        for src in volumes[mount["name"]]["projected"]["sources"]
                        for item in src["secret"]["items"]
                    ]
                    assert path.rsplit("/", 1)[1] in files, (doc["metadata"]["name"], var)


# ---------------------------------------------------------------- secrets

SECRET_ENV = {"TELEGRAM_BOT_TOKEN", "TELEDROP_WEBHOOK_SECRET", "DATABASE_URL", "AWS_ACCESS_KEY_ID",
              "AWS_SECRET_ACCESS_KEY", "TELEGRAM_API_ID", "TELEGRAM_API_HASH"}


def secret_values(values: dict[str, Any]) -> list[str]:
    s = values["secrets"]
    out = [s[k]["value"] for k in ["botToken", "webhookSecret", "databaseUrl"]]
    out += [s["storageCredentials"]["accessKeyId"], s["storageCredentials"]["secretAccessKey"]]
    out += [str(s["telegramApi"]["apiId"]), s["telegramApi"]["apiHash"]]
    assert all(out)
    return out


def test_created_secret_holds_the_values(rendered):
    docs = rendered["secrets"]
    secret = one(docs, "Secret", "teledrop")
    assert secret["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert sorted(decoded.values()) == sorted(secret_values(SECRETS))


@pytest.mark.parametrize("name", VALUE_SETS)
def test_no_secret_value_outside_secrets(rendered, name):
    """No secret value in a ConfigMap, an env literal or any non-Secret object;
    secret variables only ever come from secretKeyRef or mounted files."""
    docs = rendered[name]
    values = render.load_values(VALUE_SETS[name]) or {}
    needles = secret_values(values) if values.get("secrets", {}).get("create") else []
    for d in docs:
        if d["kind"] == "Secret":
            continue
        text = yaml.safe_dump(d)
        for n in needles:
            assert n not in text, f"{name}: a secret value appears in {d['kind']}/{d['metadata']['name']}"
        if d["kind"] == "ConfigMap":
            for n in needles:
                assert n not in str(d.get("data")), d["metadata"]["name"]
    for doc, spec in pod_specs(docs):
        for c in containers(spec):
            for e in c.get("env") or []:
                if e["name"] in SECRET_ENV:
                    assert "value" not in e, f"{doc['metadata']['name']}: {e['name']} is a literal"
                    assert "secretKeyRef" in e["valueFrom"], e
                if "value" in e:
                    for n in needles:
                        assert n not in e["value"], (doc["metadata"]["name"], e["name"])
            assert not c.get("envFrom"), "envFrom would hide where a variable comes from"


def test_generated_webhook_secret_is_valid_and_random():
    values = {"secrets": {"create": True, "botToken": {"value": "1:x"}, "databaseUrl": {"value": "postgres://h/db"},
                          "storageCredentials": {"enabled": False}}}
    first = one(render.render_docs(values), "Secret", "teledrop")["data"]["telegram-webhook-secret"]
    second = one(render.render_docs(values), "Secret", "teledrop")["data"]["telegram-webhook-secret"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{64}", base64.b64decode(first).decode())
    assert first != second  # offline there is no previous Secret to keep (lookup keeps it on a cluster)


def test_secrets_create_requires_the_token():
    with pytest.raises(helm.HelmError, match="botToken"):
        render.render_templates({"secrets": {"create": True, "databaseUrl": {"value": "postgres://h/db"}}})


def test_existing_secrets_are_referenced(rendered):
    docs = rendered["full"]
    assert not find(docs, "Secret")
    worker = one(docs, "Deployment", "teledrop-worker")["spec"]["template"]["spec"]
    sources = next(v for v in worker["volumes"] if v["name"] == "secrets")["projected"]["sources"]
    assert {(s["secret"]["name"], s["secret"]["items"][0]["key"]) for s in sources} == {
        ("teledrop-telegram", "token"),
        ("teledrop-postgres-app", "uri"),
    }
    env = env_of(worker["containers"][0])
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "teledrop-s3", "key": "AWS_SECRET_ACCESS_KEY"}
    bot_api = one(docs, "Deployment", "teledrop-bot-api")["spec"]["template"]["spec"]["containers"][0]
    assert env_of(bot_api)["TELEGRAM_API_HASH"]["valueFrom"]["secretKeyRef"] == {
        "name": "teledrop-telegram-api", "key": "api-hash"}


# ---------------------------------------------------------------- RBAC

CONTROLLER_RULES = {
    ("teledrop.dev", "retentionpolicies", v) for v in ["get", "list", "watch", "patch", "update"]
} | {
    ("teledrop.dev", "retentionpolicies/status", v) for v in ["get", "patch", "update"]
} | {
    ("events.k8s.io", "events", v) for v in ["create", "patch"]
}
LEASE_RULES = {("coordination.k8s.io", "leases", v) for v in ["get", "create", "update", "patch"]}


def triples(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    out = set()
    for rule in role["rules"]:
        assert "nonResourceURLs" not in rule
        for g in rule["apiGroups"]:
            for r in rule["resources"]:
                for v in rule["verbs"]:
                    assert "*" not in (g, r, v), rule
                    out.add((g, r, v))
    return out


@pytest.mark.parametrize("controller, watch", [
    ({}, NAMESPACE),  # the default: the release namespace only
    ({"watchNamespace": "files"}, "files"),
    ({"watchAllNamespaces": True}, ""),  # opt-in: every namespace
])
def test_controller_rbac_is_exactly_what_it_uses(controller, watch):
    docs = render.render_docs({"controller": controller})
    roles = find(docs, "Role") + find(docs, "ClusterRole")
    bindings = find(docs, "RoleBinding") + find(docs, "ClusterRoleBinding")
    granted = set().union(*(triples(r) for r in roles))
    assert granted == CONTROLLER_RULES | LEASE_RULES

    # Leases: a Role in the release namespace; get/update/patch only on its own Lease.
    lease_role = one(docs, "Role", "teledrop-controller-leader-election")
    assert lease_role["metadata"]["namespace"] == NAMESPACE
    assert triples(lease_role) == LEASE_RULES
    for rule in lease_role["rules"]:
        if set(rule["verbs"]) != {"create"}:
            assert rule["resourceNames"] == ["teledrop-controller"]

    # Policies and events: cluster-wide, or a Role in the watched namespace.
    policy_roles = [r for r in roles if r is not lease_role]
    assert len(policy_roles) == 1
    assert triples(policy_roles[0]) == CONTROLLER_RULES
    if watch:
        assert policy_roles[0]["kind"] == "Role" and policy_roles[0]["metadata"]["namespace"] == watch
        assert not find(docs, "ClusterRole") and not find(docs, "ClusterRoleBinding")
    else:
        assert policy_roles[0]["kind"] == "ClusterRole"

    # Only the controller's ServiceAccount is bound to anything.
    for b in bindings:
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": "teledrop-controller", "namespace": NAMESPACE}]
        assert any(r["kind"] == b["roleRef"]["kind"] and r["metadata"]["name"] == b["roleRef"]["name"] for r in roles)
    env = env_of(one(docs, "Deployment", "teledrop-controller")["spec"]["template"]["spec"]["containers"][0])
    assert env["TELEDROP_WATCH_NAMESPACE"]["value"] == watch


# ---------------------------------------------------------------- exposure, hooks, options


def test_ingress_routes_webhook_and_downloads_with_tls(rendered):
    ing = one(rendered["default"], "Ingress", "teledrop")
    assert ing["spec"]["tls"] == [{"hosts": ["files.example.com"], "secretName": "teledrop-tls"}]
    (rule,) = ing["spec"]["rules"]
    paths = {(p["path"], p["pathType"], p["backend"]["service"]["name"]) for p in rule["http"]["paths"]}
    assert paths == {("/telegram/webhook", "Exact", "teledrop-ingress"), ("/download", "Prefix", "teledrop-links")}
    services = {s["metadata"]["name"]: s for s in find(rendered["default"], "Service")}
    for _, _, svc in paths:
        assert [p["name"] for p in services[svc]["spec"]["ports"]] == ["http"]
    backends = [p["backend"]["service"] for p in rule["http"]["paths"]]
    assert all(b["port"] == {"name": "http"} and not b["name"].endswith("-admin") for b in backends), backends


def test_migration_job_is_a_pre_install_and_pre_upgrade_hook(rendered):
    for name in ["default", "full", "secrets"]:
        job = one(rendered[name], "Job", "teledrop-migrate")
        ann = job["metadata"]["annotations"]
        assert ann["helm.sh/hook"] == "pre-install,pre-upgrade"
        c = job["spec"]["template"]["spec"]["containers"][0]
        assert c["args"] == ["migrate"]
        assert "DATABASE_URL_FILE" in env_of(c)
        # What it needs exists before it runs: the hooks' ServiceAccount has a lower weight.
        sa = one(rendered[name], "ServiceAccount", job["spec"]["template"]["spec"]["serviceAccountName"])
        assert int(sa["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(ann["helm.sh/hook-weight"])
        assert "pre-install" in sa["metadata"]["annotations"]["helm.sh/hook"]
    secret = one(rendered["secrets"], "Secret", "teledrop")
    assert int(secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < -10


def test_webhook_registration_job(rendered):
    job = one(rendered["default"], "Job", "teledrop-webhook")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["args"] == ["webhook", "set"]
    env = env_of(c)
    assert env["TELEDROP_WEBHOOK_URL"]["value"] == "https://files.example.com"
    assert {"TELEGRAM_BOT_TOKEN_FILE", "TELEDROP_WEBHOOK_SECRET_FILE", "TELEDROP_WEBHOOK_MAX_CONNECTIONS"} <= set(env)
    assert not find(rendered["dev-overlay"], "Job", "teledrop-webhook")


def test_keda_scaled_object_replaces_the_worker_hpa(rendered):
    docs = rendered["full"]
    so = one(docs, "ScaledObject", "teledrop-worker")
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    assert so["spec"]["scaleTargetRef"]["name"] == "teledrop-worker"
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "nats-jetstream"
    assert trigger["metadata"]["stream"] == "TELEDROP_UPDATES"
    assert trigger["metadata"]["consumer"] == "teledrop-workers"
    assert trigger["metadata"]["natsServerMonitoringEndpoint"] == "nats.messaging.svc:8222"
    assert all(isinstance(v, str) for v in trigger["metadata"].values())
    assert "teledrop-worker" not in {h["spec"]["scaleTargetRef"]["name"] for h in find(docs, "HorizontalPodAutoscaler")}
    assert "replicas" not in one(docs, "Deployment", "teledrop-worker")["spec"]


def test_local_bot_api_server_shares_its_directory_with_the_workers(rendered):
    docs = rendered["full"]
    server = one(docs, "Deployment", "teledrop-bot-api")
    spec = server["spec"]["template"]["spec"]
    c = spec["containers"][0]
    assert "--local" in c["args"]
    assert "--dir=/var/lib/telegram-bot-api" in c["args"]
    server_mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/var/lib/telegram-bot-api")
    server_claim = next(v for v in spec["volumes"] if v["name"] == server_mount["name"])["persistentVolumeClaim"]
    pvc = one(docs, "PersistentVolumeClaim", server_claim["claimName"])
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert spec["securityContext"]["runAsUser"] == 65532  # same uid as teledrop: files readable by workers

    worker = one(docs, "Deployment", "teledrop-worker")["spec"]["template"]["spec"]
    wc = worker["containers"][0]
    mount = next(m for m in wc["volumeMounts"] if m["mountPath"] == "/var/lib/telegram-bot-api")
    vol = next(v for v in worker["volumes"] if v["name"] == mount["name"])
    assert vol["persistentVolumeClaim"]["claimName"] == server_claim["claimName"]
    env = env_of(wc)
    assert env["TELEGRAM_LOCAL_MODE"]["value"] == "true"
    assert env["TELEGRAM_LOCAL_DIR"]["value"] == "/var/lib/telegram-bot-api"  # only files beneath it are read
    assert env["TELEGRAM_API_URL"]["value"] == "http://teledrop-bot-api:8081/"
    svc = one(docs, "Service", "teledrop-bot-api")
    assert svc["spec"]["ports"][0]["port"] == 8081

    # Updates come from the local server, in-cluster: no public webhook route.
    job_env = env_of(one(docs, "Job", "teledrop-webhook")["spec"]["template"]["spec"]["containers"][0])
    assert job_env["TELEDROP_WEBHOOK_URL"]["value"] == f"http://teledrop-ingress.{NAMESPACE}.svc:8080"
    assert job_env["TELEGRAM_API_URL"]["value"] == "http://teledrop-bot-api:8081/"
    paths = [p["path"] for p in one(docs, "Ingress", "teledrop")["spec"]["rules"][0]["http"]["paths"]]
    assert paths == ["/download"]

    default_worker = one(rendered["default"], "Deployment", "teledrop-worker")["spec"]["template"]["spec"]
    assert env_of(default_worker["containers"][0])["TELEGRAM_LOCAL_MODE"]["value"] == "false"
    assert "TELEGRAM_API_URL" not in env_of(default_worker["containers"][0])


def test_service_monitor_scrapes_every_role(rendered):
    docs = rendered["full"]
    sm = one(docs, "ServiceMonitor", "teledrop")
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert [(e["port"], e["path"]) for e in sm["spec"]["endpoints"]] == [("admin", "/metrics")]
    selector = sm["spec"]["selector"]["matchLabels"]
    scraped = [s for s in find(docs, "Service") if selector.items() <= s["metadata"]["labels"].items()]
    assert {s["metadata"]["name"] for s in scraped} == {f"teledrop-{r}-admin" for r in ROLES}
    for s in scraped:
        assert [p["name"] for p in s["spec"]["ports"]] == ["admin"], s["metadata"]["name"]


def test_network_policies_cover_every_pod(rendered):
    docs = rendered["full"]
    policies = find(docs, "NetworkPolicy")

    def selects(policy, labels):
        sel = policy["spec"]["podSelector"]
        if not sel.get("matchLabels", {}).items() <= labels.items():
            return False
        for expr in sel.get("matchExpressions", []):
            assert expr["operator"] == "In"
            if labels.get(expr["key"]) not in expr["values"]:
                return False
        return True

    for doc, _ in pod_specs(docs):
        labels = doc["spec"]["template"]["metadata"]["labels"]
        matching = [p["metadata"]["name"] for p in policies if selects(p, labels)]
        assert matching, f"no NetworkPolicy selects {doc['kind']}/{doc['metadata']['name']}"
        for p in policies:
            if p["metadata"]["name"] in matching:
                assert set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    # Callers reach the product port of ingress and links only; Prometheus
    # reaches every role's admin port.
    for role in ROLES:
        admitted = {p["port"] for rule in one(docs, "NetworkPolicy", f"teledrop-{role}")["spec"]["ingress"]
                    for p in rule["ports"]}
        assert admitted == ({"http", "admin"} if role in PUBLIC_ROLES else {"admin"}), role
    controller = one(docs, "NetworkPolicy", "teledrop-controller")
    ports = {p["port"] for rule in controller["spec"]["egress"] for p in rule["ports"]}
    assert {53, 5432, 6443} <= ports and 4222 not in ports
    assert not find(rendered["default"], "NetworkPolicy")


def test_notes_tell_what_to_do_next():
    text = render.notes(None)
    assert "kubectl get rp" in text
    assert "webhook" in text.lower()
    text = render.notes({"webhook": {"register": False}})
    assert "teledrop webhook set --url https://files.example.com" in text


def test_names_follow_the_release():
    docs = render.render_docs(None, name="files")
    assert one(docs, "Deployment", "files-teledrop-worker")
    docs = render.render_docs({"fullnameOverride": "td"}, name="whatever")
    assert one(docs, "Deployment", "td-links")
    for d in docs:
        if d["kind"] not in {"ClusterRole", "ClusterRoleBinding"}:
            assert d["metadata"]["namespace"] == NAMESPACE, d["metadata"]["name"]


def test_readme_minimal_values_install():
    """The deploy guide's minimal values file renders, lints and routes its host."""
    readme = (render.ROOT / "docs" / "deploy.md").read_text()
    section = readme[readme.index("A minimal values file"):]
    block = section[section.index("```yaml") + len("```yaml"):]
    values = yaml.safe_load(block[: block.index("```")])
    report = helm.lint(CHART, values, namespace=NAMESPACE, kube_version="v1.33.0")
    assert not report["errors"], report
    docs = render.render_docs(values)
    ing = one(docs, "Ingress", "teledrop")
    assert ing["spec"]["rules"][0]["host"] == values["httpIngress"]["host"]
    worker = one(docs, "Deployment", "teledrop-worker")["spec"]["template"]["spec"]["containers"][0]
    assert worker["image"] == "registry.example.com/teledrop:0.1.0"
