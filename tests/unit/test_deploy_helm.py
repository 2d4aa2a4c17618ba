"""The Helm chart (deploy/helm/hookline) rendered by `helm template` and checked against
Kubernetes' own schemas (kubernetes-validate, offline), then for what an operator relies
on: probes, resources, non-root pods, secrets by reference, the migrate hook, disruption
budgets, senders scaled by lag up to the partition count, CPU autoscaling at the edge.

`make test` installs helm (a Go module) into .hookline/bin; HOOKLINE_HELM names another."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import kubernetes_validate
import pytest
import yaml

from shared.config import Settings
from tests.infra import ROOT

CHART = ROOT / "deploy" / "helm" / "hookline"
KUBE_VERSION = "1.31.0"
TRY_OUT = ["secret.values.secretKey=k", "secret.values.adminToken=t"]
WORKERS = ("relay", "matcher", "sender")
# Read by shared.runtime.instance_name, not a Setting: the pod's name names the replica.
NOT_SETTINGS = {"HOOKLINE_INSTANCE"}


def _helm() -> str:
    found = os.environ.get("HOOKLINE_HELM") or shutil.which(
        "helm", path=f"{ROOT / '.hookline' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    )
    if not found:
        pytest.fail("helm not found: `make helm` installs it (go install) into .hookline/bin")
    return found


def render(*sets: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    args = [_helm(), "template", "hl", str(CHART), "--kube-version", KUBE_VERSION]
    for s in sets:
        args += ["--set", s]
    return subprocess.run(args, capture_output=True, text=True, check=check, timeout=60)


def manifests(*sets: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(render(*TRY_OUT, *sets).stdout) if d]


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_helm_lint_passes() -> None:
    args = [_helm(), "lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION]
    for s in TRY_OUT:
        args += ["--set", s]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("sets", [(), ("secret.existingSecret=platform-hookline",)])
def test_every_rendered_manifest_validates_against_the_kubernetes_schemas(
    sets: tuple[str, ...],
) -> None:
    docs = manifests(*sets)
    assert {d["kind"] for d in docs} >= {
        "Deployment",
        "Job",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ScaledObject",
    }
    for doc in docs:
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: no schema ships with kubernetes-validate (checked below)
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_a_deployment_per_process_with_probes_resources_and_a_non_root_pod() -> None:
    deployments = of_kind(manifests(), "Deployment")
    assert set(deployments) == {f"hl-hookline-{s}" for s in ("api", "inbound", *WORKERS)}
    for name, d in deployments.items():
        pod = d["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        assert c["args"] == [f"services.{name.removeprefix('hl-hookline-')}"]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert c[probe]["httpGet"]["path"] in ("/healthz", "/readyz"), (name, probe)
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
        # Kubernetes' SIGKILL comes after the process's own drain deadline.
        env = {e["name"]: e for e in c["env"]}
        grace = int(env["HOOKLINE_SHUTDOWN_GRACE_S"]["value"])
        assert pod["terminationGracePeriodSeconds"] > grace


def test_workers_are_probed_on_the_metrics_port_and_the_edge_on_its_own() -> None:
    deployments = of_kind(manifests(), "Deployment")
    for name, d in deployments.items():
        (c,) = d["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in c["env"]}
        port = c["livenessProbe"]["httpGet"]["port"]
        component = name.removeprefix("hl-hookline-")
        if component in WORKERS:
            assert port == int(env["HOOKLINE_METRICS_PORT"])
        else:
            assert port == int(env[f"HOOKLINE_{component.upper()}_PORT"])


def test_secrets_come_from_a_secret_and_every_variable_is_a_setting() -> None:
    known = {f.metadata["env"] for f in Settings.__dataclass_fields__.values()} | NOT_SETTINGS
    docs = manifests("secret.existingSecret=platform-hookline")
    assert not of_kind(docs, "Secret")  # the platform's own Secret, not one of ours
    pods = [d["spec"]["template"]["spec"] for d in docs if d["kind"] in ("Deployment", "Job")]
    for pod in pods:
        (c,) = pod["containers"]
        env = {e["name"]: e for e in c["env"]}
        assert set(env) <= known, set(env) - known
        for secret in ("HOOKLINE_DATABASE_URL", "HOOKLINE_SECRET_KEY", "HOOKLINE_ADMIN_TOKEN"):
            ref = env[secret]["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "platform-hookline", secret
        literal = {k: e["value"] for k, e in env.items() if "value" in e}
        Settings.from_env(literal)  # each value parses


def test_without_a_secret_the_chart_refuses_to_render() -> None:
    done = render(check=False)
    assert done.returncode != 0 and "secretKey" in done.stderr


def test_the_migrate_job_runs_before_install_and_upgrade_after_its_secret() -> None:
    docs = manifests()
    (job,) = of_kind(docs, "Job").values()
    hooks = job["metadata"]["annotations"]["helm.sh/hook"].split(",")
    assert set(hooks) == {"pre-install", "pre-upgrade"}
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["shared.migrate"]
    (secret,) = of_kind(docs, "Secret").values()
    assert int(secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        job["metadata"]["annotations"].get("helm.sh/hook-weight", "0")
    )


def test_every_deployment_has_a_disruption_budget_selecting_its_pods() -> None:
    docs = manifests()
    budgets = of_kind(docs, "PodDisruptionBudget")
    for name, d in of_kind(docs, "Deployment").items():
        labels = d["spec"]["template"]["metadata"]["labels"]
        selector = budgets[name]["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items()


@pytest.mark.parametrize("partitions", [12, 48])
def test_senders_scale_on_their_group_lag_up_to_the_partition_count(partitions: int) -> None:
    docs = manifests(f"kafka.partitions={partitions}")
    (scaled,) = of_kind(docs, "ScaledObject").values()
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == "hl-hookline-sender"
    assert spec["maxReplicaCount"] == partitions
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == "hookline-sender"
    assert trigger["metadata"]["topic"] == "hookline.deliveries"
    assert trigger["metadata"]["allowIdleConsumers"] == "false"
    # KEDA owns the sender count: a fixed replicas field would fight it on every upgrade.
    assert "replicas" not in of_kind(docs, "Deployment")["hl-hookline-sender"]["spec"]


def test_the_api_and_the_inbound_edge_scale_on_cpu() -> None:
    hpas = of_kind(manifests(), "HorizontalPodAutoscaler")
    assert set(hpas) == {"hl-hookline-api", "hl-hookline-inbound"}
    for name, hpa in hpas.items():
        assert hpa["spec"]["scaleTargetRef"]["name"] == name
        (metric,) = hpa["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu"


def test_notice_mail_comes_from_the_secret_and_may_be_left_out() -> None:
    url = "smtp://hookline:pw@mail.example.com:587"
    docs = manifests(f"secret.values.smtpUrl={url}")
    (secret,) = of_kind(docs, "Secret").values()
    assert secret["stringData"]["smtp-url"] == url  # it may carry a password
    for d in of_kind(docs, "Deployment").values():
        (c,) = d["spec"]["template"]["spec"]["containers"]
        ref = {e["name"]: e for e in c["env"]}["HOOKLINE_SMTP_URL"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "hl-hookline-secrets", "key": "smtp-url", "optional": True}
    # Left out: an empty key in the chart's Secret (no mail), and a platform's own Secret
    # without the key still starts the pods.
    (secret,) = of_kind(manifests(), "Secret").values()
    assert secret["stringData"]["smtp-url"] == ""
    assert Settings.from_env({"HOOKLINE_SMTP_URL": ""}).smtp_url == ""
