"""deploy/k8s: every manifest parses and validates against the Kubernetes JSON schemas
(kubernetes-validate, strict: unknown fields refused) and the ScaledObject against KEDA's CRD
model (cloudcoil-models-keda); then each is cross-checked with the code it runs: the settings,
the worker's routes and port, its Kafka consumer group, the image, the bench's figures.

No cluster here: what a cluster alone can tell (admission, KEDA reading lag, probes answering
in a pod) is not checked; deploy/README.md, "Kubernetes", says what was validated and how."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.keda.v1alpha1 import ScaledObject
from pydantic import SecretStr

import meterguard
from meterguard.streams.runtime.app import create_app
from meterguard.streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUSTOMIZATION = K8S / "kustomization.yaml"
POLICY = ROOT / "deploy" / "meterguard.yaml"  # what deploy/README.md puts in meterguard-policy
ALTERNATIVES = ("hpa-prometheus-adapter.yaml",)  # not in kustomization.yaml: one autoscaler
# The oldest Kubernetes minor the manifests must fit, and the newest the schema package knows.
OLDEST_K8S = "1.30"
# Trigger metadata the KEDA Kafka scaler reads (kedacore/keda pkg/scalers/kafka_scaler.go,
# `keda:"name=..."` tags of kafkaMetadata, order=triggerMetadata); unknown keys are ignored
# by KEDA, so a misspelt one would silently fall back to its default.
KAFKA_TRIGGER_KEYS = frozenset(
    {"bootstrapServers", "consumerGroup", "topic", "partitionLimitation", "lagThreshold"}
    | {"activationLagThreshold", "offsetResetPolicy", "allowIdleConsumers"}
    | {"excludePersistentLag", "scaleToZeroOnInvalidOffset", "limitToPartitionsWithLag"}
    | {"ensureEvenDistributionOfPartitions", "fullMetadata", "version", "tls", "unsafeSsl"}
    | {"sasl", "saslTokenProvider", "awsRegion"}
)


def _manifests(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def _kustomization() -> dict[str, Any]:
    doc = yaml.safe_load(KUSTOMIZATION.read_text())
    assert isinstance(doc, dict)
    return doc


def _applied() -> list[dict[str, Any]]:
    """What `kubectl apply -k deploy/k8s` sends: the listed resources, in order."""
    return [d for name in _kustomization()["resources"] for d in _manifests(name)]


def _one(kind: str, name: str | None = None) -> dict[str, Any]:
    docs = _applied() + [d for alt in ALTERNATIVES for d in _manifests(alt)]
    found = [d for d in docs if d["kind"] == kind]
    if name is not None:
        found = [d for d in found if d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name or ''}: {len(found)} found"
    return found[0]


def _worker() -> dict[str, Any]:
    containers = _one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["worker"]
    return dict(containers[0])


def _config() -> dict[str, str]:
    return dict(_one("ConfigMap", "meterguard-config")["data"])


def _secret() -> dict[str, str]:
    return dict(_one("Secret", "meterguard-secrets")["stringData"])


def _triggers() -> list[dict[str, str]]:
    return [t["metadata"] for t in _one("ScaledObject")["spec"]["triggers"]]


def _secret_fields() -> set[str]:
    """Settings that are credentials: SecretStr, or kept out of the settings' repr."""
    return {
        f"MG_{name.upper()}"
        for name, field in Settings.model_fields.items()
        if field.repr is False or SecretStr in getattr(field.annotation, "__args__", ())
    }


def _route_secret_envs() -> set[str]:
    policy = Settings(_env_file=None, policy_file=str(POLICY)).policy  # type: ignore[call-arg]
    return {r.secret_env for r in policy.routing.webhooks if r.secret_env}


def _manifest_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    """Settings as a pod reads them (envFrom: ConfigMap, then Secret), with the two paths a pod
    mounts pointed at this checkout: the policy file (deploy/README.md makes the ConfigMap
    from deploy/meterguard.yaml) and the data folder."""
    for name in [n for n in os.environ if n.startswith("MG_")]:
        monkeypatch.delenv(name)
    for name, value in {**_config(), **_secret()}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MG_POLICY_FILE", str(POLICY))
    monkeypatch.setenv("MG_DATA_DIR", str(tmp_path))
    return Settings(_env_file=None)  # type: ignore[call-arg]


def test_kustomization_lists_every_manifest_and_each_parses() -> None:
    kustomization = _kustomization()
    files = {p.name for p in K8S.glob("*.yaml")} - {KUSTOMIZATION.name}
    assert set(kustomization["resources"]) == files - set(ALTERNATIVES)
    assert {p.name for p in K8S.iterdir()} == files | {KUSTOMIZATION.name}  # nothing else
    for name in files:
        docs = _manifests(name)
        assert docs, name
        for doc in docs:
            assert {"apiVersion", "kind", "metadata"} <= doc.keys(), name
    # kustomize's namespace transformer would move anything else: say it in the files too.
    for doc in _applied():
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == kustomization["namespace"], doc["kind"]
    names = [(d["kind"], d["metadata"]["name"]) for d in _applied()]
    assert len(names) == len(set(names))


@pytest.mark.skipif(not shutil.which("kubectl"), reason="no kubectl on PATH")
def test_kubectl_kustomize_builds_exactly_the_listed_manifests() -> None:
    """The build half of `kubectl apply -k deploy/k8s`, offline (kubectl's own kustomize)."""
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    built = [d for d in yaml.safe_load_all(out) if d]

    def key(doc: dict[str, Any]) -> tuple[str, str]:
        return doc["kind"], doc["metadata"]["name"]

    assert sorted(built, key=key) == sorted(_applied(), key=key)


@pytest.mark.parametrize("version", [OLDEST_K8S, kubernetes_validate.utils.latest_version()])
def test_core_manifests_validate_against_the_kubernetes_schemas(version: str) -> None:
    docs = _applied() + [d for alt in ALTERNATIVES for d in _manifests(alt)]
    checked = set()
    for doc in docs:
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: the next test
        # strict: the schemas refuse unknown fields (a misspelt key is an error, not ignored)
        kubernetes_validate.validate(doc, version, strict=True)
        checked.add(doc["kind"])
    assert checked == {
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "HorizontalPodAutoscaler",
    }


def test_scaled_object_fits_kedas_crd_and_its_kafka_scaler() -> None:
    doc = _one("ScaledObject")
    # cloudcoil's models are generated from KEDA's CRD openAPIV3Schema; they ignore unknown
    # keys, so the round trip must give the document back whole (nothing dropped).
    model = ScaledObject.model_validate(doc)
    assert model.model_dump(mode="json", by_alias=True, exclude_none=True) == doc
    assert doc["spec"]["scaleTargetRef"]["name"] == _one("Deployment")["metadata"]["name"]
    assert {t["type"] for t in doc["spec"]["triggers"]} == {"kafka"}
    for meta in _triggers():
        assert set(meta) <= KAFKA_TRIGGER_KEYS, set(meta) - KAFKA_TRIGGER_KEYS
        assert int(meta["lagThreshold"]) > 0 and int(meta["activationLagThreshold"]) >= 0
        assert meta["offsetResetPolicy"] in {"latest", "earliest"}


def test_every_env_name_is_a_setting_and_secrets_stay_in_the_secret() -> None:
    fields = {f"MG_{name.upper()}" for name in Settings.model_fields}
    config, secret = _config(), _secret()
    explicit = {e["name"] for e in _worker().get("env", [])}
    for name in set(config) | {n for n in explicit if n.startswith("MG_")}:
        assert name in fields, f"{name} is not a field of Settings"
    # The Secret: settings, and the variables the shipped policy's routes name (secret_env).
    assert set(secret) - fields == _route_secret_envs()
    secrets = _secret_fields()
    # Every credential the worker reads has its key in the Secret...
    assert secrets - {"MG_REDIS_URL"} <= set(secret)
    # ...and none is in the ConfigMap, but a Redis URL without a password (MG_REDIS_PASSWORD).
    assert set(config) & secrets == {"MG_REDIS_URL"}
    assert urlsplit(config["MG_REDIS_URL"]).password is None
    assert not explicit & secrets
    assert all(v == "" for v in secret.values())  # placeholders: never a shipped credential
    refs = _worker()["envFrom"]
    assert refs == [
        {"configMapRef": {"name": "meterguard-config"}},
        {"secretRef": {"name": "meterguard-secrets"}},
    ]


async def test_the_manifests_settings_build_the_worker_keda_watches(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = _manifest_settings(monkeypatch, tmp_path)
    # As shipped, a policy route's secret is empty: the worker refuses to start (say so).
    with pytest.raises(ValueError, match="secret_env SIEM_WEBHOOK_SECRET is not set"):
        create_app(settings)
    for name in _route_secret_envs():  # as the operator fills the Secret
        monkeypatch.setenv(name, "whsec_" + "A" * 32)
    # Everything the worker derives from them at start, as it would in the pod.
    assert settings.kafka_security.protocol == "PLAINTEXT"
    assert settings.redis_options.password is None  # the Secret's empty value is "unset"
    assert settings.api_token_value is None  # empty: operator actions refused (503)
    assert settings.policy is not None
    app = create_app(settings)
    consumer = app.consumer._thread._create_worker_consumer(app.transport)
    for meta in _triggers():
        # KEDA reads the lag of the group the worker commits in, on the brokers it uses.
        assert meta["consumerGroup"] == consumer._group_id == settings.app_id
        assert meta["bootstrapServers"] == settings.bootstrap
        assert meta["offsetResetPolicy"] == consumer._auto_offset_reset
    assert {m["topic"] for m in _triggers()} == {settings.topic_raw, settings.topic_events}
    # The probes and the Service point at routes the worker serves, on its port.
    routes = set(app.web.views)
    worker = _worker()
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert worker[probe]["httpGet"]["port"] == "web"
        assert worker[probe]["httpGet"]["path"] in routes
    assert worker["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert worker["readinessProbe"]["httpGet"]["path"] == "/readyz"
    annotations = _one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] in routes


def test_one_web_port_everywhere() -> None:
    port = Settings.model_fields["web_port"].default
    assert int(_config()["MG_WEB_PORT"]) == port
    assert _worker()["ports"] == [{"name": "web", "containerPort": port, "protocol": "TCP"}]
    service = _one("Service")["spec"]["ports"]
    assert [(p["port"], p["targetPort"]) for p in service] == [(port, "web")]
    annotations = _one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == port
    ingress = _one("NetworkPolicy")["spec"]["ingress"]
    assert [p["port"] for rule in ingress for p in rule["ports"]] == [port]


def test_network_policy_lets_out_dns_kafka_redis_and_https_only() -> None:
    policy = _one("NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    config = _config()
    kafka = {
        urlsplit(f"kafka://{h}").port
        for h in Settings(
            _env_file=None,  # type: ignore[call-arg]
            kafka_broker=config["MG_KAFKA_BROKER"],
        ).bootstrap.split(",")
    }
    redis = {urlsplit(config["MG_REDIS_URL"]).port}
    egress = {(p["protocol"], p["port"]) for rule in policy["egress"] for p in rule["ports"]}
    tcp = {port for proto, port in egress if proto == "TCP"}
    assert tcp == kafka | redis | {53, 443}
    assert {port for proto, port in egress if proto == "UDP"} == {53}
    # Ingress from named namespaces only, never from anywhere.
    for rule in policy["ingress"]:
        assert rule["from"] and all("namespaceSelector" in peer for peer in rule["from"])


def test_selectors_agree() -> None:
    deployment = _one("Deployment")["spec"]
    labels = deployment["template"]["metadata"]["labels"]
    selectors = [
        deployment["selector"]["matchLabels"],
        _one("Service")["spec"]["selector"],
        _one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        _one("NetworkPolicy")["spec"]["podSelector"]["matchLabels"],
    ]
    for selector in selectors:
        assert selector.items() <= labels.items(), selector
    pod = deployment["template"]["spec"]
    assert pod["serviceAccountName"] == _one("ServiceAccount")["metadata"]["name"]
    hpa = _one("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert hpa["name"] == _one("Deployment")["metadata"]["name"]
    assert "replicas" not in deployment  # the autoscaler's; a re-apply would reset it


def test_replicas_fit_the_partitions() -> None:
    partitions = int(_config()["MG_TOPIC_PARTITIONS"])
    keda = _one("ScaledObject")["spec"]
    hpa = _one("HorizontalPodAutoscaler")["spec"]
    pdb = _one("PodDisruptionBudget")["spec"]
    for low, high in ((keda["minReplicaCount"], keda["maxReplicaCount"]),
                      (hpa["minReplicas"], hpa["maxReplicas"])):  # fmt: skip
        assert 2 <= low <= high <= partitions  # one may die; none idles past the partitions
        assert partitions % low == 0 and partitions % high == 0  # even shares at both ends
        assert pdb["maxUnavailable"] < low  # a drain never takes every worker
    for meta in _triggers():
        assert meta["ensureEvenDistributionOfPartitions"] == "true"
        assert meta["allowIdleConsumers"] == "false"
    thresholds = {int(m["lagThreshold"]) for m in _triggers()}
    hpa_targets = {int(m["external"]["target"]["averageValue"]) for m in hpa["metrics"]}
    assert thresholds == hpa_targets  # the two autoscalers scale alike


def test_resources_are_sized_from_the_bench_figures_with_their_reasons() -> None:
    readme = (ROOT / "README.md").read_text()
    rss = re.search(
        r"\| worker RSS after the run \| (\d+) MiB \((\d+) MiB after the batched", readme
    )
    eps = re.search(r"\| events/s per worker, one event per record \| ([\d,]+)", readme)
    assert rss and eps, "README 'Sizing' changed: re-derive the resources in deployment.yaml"
    single, batched = int(rss[1]), int(rss[2])
    resources = _worker()["resources"]
    request = _mebibytes(resources["requests"]["memory"])
    limit = _mebibytes(resources["limits"]["memory"])
    assert single < batched <= request < limit  # room for the worst RSS bench saw
    assert _cores(resources["requests"]["cpu"]) >= 1 <= _cores(resources["limits"]["cpu"])
    text = (K8S / "deployment.yaml").read_text()
    # The figures the numbers come from, quoted where they are used, and each number's reason.
    for figure in (f"{single} MiB", f"{batched} MiB", eps[1], "meterguard bench"):
        assert figure in text, figure
    block = text[
        text.index("resources:") : text.index("securityContext:", text.index("resources:"))
    ]
    for line in block.splitlines():
        if re.match(r"\s+(cpu|memory):", line):
            assert "#" in line, f"no reason next to {line.strip()}"
    keda = (K8S / "scaledobject.yaml").read_text()
    assert eps[1] in keda and "lagThreshold" in keda  # the threshold's figure, quoted


def test_pod_runs_the_image_non_root_on_a_read_only_root() -> None:
    worker = _worker()
    assert worker["image"] == f"ghcr.io/meterguard/meterguard:{meterguard.__version__}"
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert re.search(r'^ENTRYPOINT \["meterguard"\]$', dockerfile, re.M)
    assert worker["args"] == ["worker"]
    user = re.findall(r"^USER (\d+):(\d+)$", dockerfile, re.M)
    pod = _one("Deployment")["spec"]["template"]["spec"]
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True
    assert user[-1] == (str(context["runAsUser"]), str(context["runAsGroup"]))
    assert pod["automountServiceAccountToken"] is False
    container = worker["securityContext"]
    assert container["readOnlyRootFilesystem"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"] == {"drop": ["ALL"]}
    # The one folder the worker writes (MG_DATA_DIR) and /tmp are emptyDirs; the policy file
    # comes from its own ConfigMap.
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in worker["volumeMounts"]}
    config = _config()
    data = next(p for p in mounts if config["MG_DATA_DIR"].startswith(p + "/"))
    assert "emptyDir" in mounts[data] and "emptyDir" in mounts["/tmp"]
    policy_dir = str(Path(config["MG_POLICY_FILE"]).parent)
    assert mounts[policy_dir]["configMap"]["name"] == "meterguard-policy"


def test_deploy_readme_explains_every_file() -> None:
    readme = (ROOT / "deploy" / "README.md").read_text()
    section = readme[readme.index("## Kubernetes") :]
    for path in K8S.iterdir():
        assert path.name in section, path.name
    assert "kubectl apply -k deploy/k8s" in section
    assert "kubectl -n meterguard create configmap meterguard-policy" in section
    # The commands cannot run here (no API server); what they read must exist, and the
    # policy ConfigMap's key is the file name MG_POLICY_FILE expects.
    commands = [line for line in section.splitlines() if line.startswith("kubectl ")]
    for path in re.findall(r"(?:=|\s)(deploy/[\w./-]+)", "\n".join(commands)):
        assert (ROOT / path).exists(), path
    key = re.search(r"--from-file=([\w.-]+)=", section)
    assert key and key[1] == Path(_config()["MG_POLICY_FILE"]).name


def _mebibytes(quantity: str) -> float:
    units = {"Mi": 1, "Gi": 1024}
    return float(quantity[:-2]) * units[quantity[-2:]]


def _cores(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)
