"""Credentials reach the pods only as files mounted from Secrets: the CA
bundle every teledrop pod trusts (TELEDROP_CA_FILE), NATS's client
certificate (NATS_TLS_CERT_FILE/NATS_TLS_KEY_FILE) and NATS credential
(NATS_CREDS_FILE, NATS_USER + NATS_PASSWORD_FILE, NATS_TOKEN_FILE), next to
the bot token, webhook secret and database URL (`secrets.*`)."""

from __future__ import annotations

import re
from typing import Any

import helm_python as helm
import pytest

import render
from conftest import VALUE_SETS, containers, env_of, pod_specs

CA = {"tls": {"caSecret": {"name": "corp-ca", "key": "bundle.pem"}}}
NATS_CLIENT = {"clientSecret": {"name": "nats-client", "certKey": "crt.pem", "keyKey": "key.pem"}}
NATS_AUTH = {
    "creds": {"type": "creds", "existingSecret": "nats-auth", "credsKey": "teledrop.creds"},
    "userPassword": {"type": "userPassword", "existingSecret": "nats-auth", "user": "teledrop",
                     "passwordKey": "pw"},
    "token": {"type": "token", "existingSecret": "nats-auth", "tokenKey": "tok"},
}
# (variable, Secret, key) each auth type mounts.
AUTH_FILES = {
    "creds": ("NATS_CREDS_FILE", "nats-auth", "teledrop.creds"),
    "userPassword": ("NATS_PASSWORD_FILE", "nats-auth", "pw"),
    "token": ("NATS_TOKEN_FILE", "nats-auth", "tok"),
}
NATS_VARS = {"NATS_TLS_CERT_FILE", "NATS_TLS_KEY_FILE", "NATS_CREDS_FILE", "NATS_USER", "NATS_PASSWORD_FILE",
             "NATS_TOKEN_FILE"}
# A variable named like a credential holds a path (…_FILE) or comes from a Secret, never a literal.
CREDENTIAL_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|CREDS|CREDENTIAL|PRIVATE|_KEY(_|$)|DATABASE_URL")


def values(auth: str) -> dict[str, Any]:
    return {**CA, "nats": {"tls": NATS_CLIENT, "auth": NATS_AUTH[auth]}}


def teledrop_pods(docs):
    """(name, pod spec, container) of every pod running the teledrop image."""
    for doc, spec in pod_specs(docs):
        for c in containers(spec):
            if c["image"].startswith("teledrop:"):
                yield doc["metadata"]["name"], spec, c


def mounted_from(spec: dict[str, Any], container: dict[str, Any], path: str) -> tuple[str, str]:
    """The (Secret, key) a file path in the container comes from; fails unless a
    read-only mount of a projected Secret volume provides exactly that file."""
    mount = next((m for m in container.get("volumeMounts") or [] if path.startswith(m["mountPath"] + "/")), None)
    assert mount is not None, f"{path} is not under any mount"
    assert mount.get("readOnly") is True, mount
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    file = path[len(mount["mountPath"]) + 1:]
    for src in volume["projected"]["sources"]:
        for item in src["secret"]["items"]:
            if item["path"] == file:
                return src["secret"]["name"], item["key"]
    raise AssertionError(f"no Secret item is mounted at {path}")


@pytest.mark.parametrize("auth", NATS_AUTH)
def test_nats_and_ca_credentials_are_files_from_their_secrets(auth):
    docs = render.render_docs(values(auth))
    seen = set()
    for name, spec, c in teledrop_pods(docs):
        seen.add(name)
        env = env_of(c)
        # Every teledrop pod (roles and hook Jobs) trusts the CA bundle.
        assert mounted_from(spec, c, env["TELEDROP_CA_FILE"]["value"]) == ("corp-ca", "bundle.pem"), name
        if name not in {"teledrop-ingress", "teledrop-worker"}:
            assert not NATS_VARS & set(env), f"{name} does not talk to NATS"
            continue
        assert mounted_from(spec, c, env["NATS_TLS_CERT_FILE"]["value"]) == ("nats-client", "crt.pem")
        assert mounted_from(spec, c, env["NATS_TLS_KEY_FILE"]["value"]) == ("nats-client", "key.pem")
        var, secret, key = AUTH_FILES[auth]
        assert mounted_from(spec, c, env[var]["value"]) == (secret, key)
        others = {"NATS_CREDS_FILE", "NATS_PASSWORD_FILE", "NATS_TOKEN_FILE"} - {var}
        assert not others & set(env), f"{name}: one NATS credential at a time"
        if auth == "userPassword":
            assert env["NATS_USER"]["value"] == "teledrop"  # a name, not a secret
        else:
            assert "NATS_USER" not in env
        # Secret files are readable by the pod's group (fsGroup), nobody else.
        volume = next(v for v in spec["volumes"] if v["name"] == "credentials")
        assert volume["projected"]["defaultMode"] == 0o440
    assert {"teledrop-ingress", "teledrop-worker", "teledrop-links", "teledrop-controller", "teledrop-migrate",
            "teledrop-webhook"} <= seen


def test_without_those_values_nothing_is_mounted():
    for name, spec, c in teledrop_pods(render.render_docs(None)):
        assert not ({"TELEDROP_CA_FILE"} | NATS_VARS) & set(env_of(c)), name
        assert all(v["name"] != "credentials" for v in spec["volumes"]), name


@pytest.mark.parametrize("case", [*VALUE_SETS, *(f"nats-{a}" for a in NATS_AUTH)])
def test_no_credential_variable_is_a_literal(rendered, case):
    """Every value set under test, and renders with each NATS credential."""
    docs = render.render_docs(values(case[5:])) if case.startswith("nats-") else rendered[case]
    for doc, spec in pod_specs(docs):
        for c in containers(spec):
            for e in c.get("env") or []:
                name = e["name"]
                at = f"{case}: {doc['metadata']['name']}/{c['name']}: {name}"
                if name.endswith("_FILE"):
                    # A path to a file mounted from a Secret.
                    if c["image"].startswith("teledrop:"):
                        mounted_from(spec, c, e["value"])
                elif CREDENTIAL_NAME.search(name):
                    assert "value" not in e, f"{at} is a literal"
                    assert "secretKeyRef" in e["valueFrom"], at


@pytest.mark.parametrize("bad, message", [
    ({"nats": {"auth": {"type": "token"}}}, "nats.auth.existingSecret"),
    ({"nats": {"auth": {"type": "userPassword", "existingSecret": "s"}}}, "nats.auth.user"),
    ({"controller": {"watchNamespace": "files", "watchAllNamespaces": True}}, "exclude each other"),
])
def test_incomplete_settings_fail_with_the_value_to_set(bad, message):
    with pytest.raises(helm.HelmError, match=re.escape(message)):
        render.render_templates(bad)


def test_an_unknown_auth_type_is_refused_by_the_schema():
    with pytest.raises(helm.HelmError):
        render.render_templates({"nats": {"auth": {"type": "nkey", "existingSecret": "s"}}})
