"""Offline checks for the Kubernetes manifests under deploy/.

Every YAML document is validated against the Kubernetes OpenAPI schema shipped with
kubernetes-validate (no cluster, no network), and the suite's deployment requirements
(hardening, probes, RBAC, Service wiring, kustomization completeness) are asserted.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

# Kubernetes schema version the manifests are validated against (shipped offline by
# kubernetes-validate). Bump deliberately when the supported cluster baseline moves.
K8S_VERSION = "1.33.0"

DEPLOY_DIR = Path(__file__).resolve().parent.parent / "deploy"
KUSTOMIZATION = DEPLOY_DIR / "kustomization.yaml"

APP_NAMESPACE = "trainyard"
JOBS_NAMESPACE = "trainyard-jobs"
IMAGE_NAME = "trainyard"
UID = 10001

GRPC_SERVICES = {
    "upload": 50051,
    "orchestrator": 50052,
    "jobrunner": 50053,
    "finetuning": 50054,
    "clustering": 50055,
}
METRICS_PORT = 9090
GATEWAY = "trainyard-gateway"
GATEWAY_HTTP_PORT = 8080
GATEWAY_ADMIN_PORT = 9901

# The jobrunner Role, exactly: (apiGroup, resource) -> verbs.
JOBRUNNER_RULES = {
    ("batch", "jobs"): {"create", "get", "list", "watch", "delete"},
    ("", "secrets"): {"create", "get", "list", "patch", "delete"},
    ("", "pods"): {"get", "list", "watch", "delete"},
    ("", "pods/log"): {"get"},
    ("", "events"): {"get", "list", "watch"},
}

CONFIG_KEYS = {
    "TRAINYARD_AUTH_JWKS_URL",
    "TRAINYARD_LOG_FORMAT",
    "TRAINYARD_STORAGE_BACKEND",
    "TRAINYARD_S3_BUCKET",
    "TRAINYARD_S3_PREFIX",
    "TRAINYARD_S3_ENDPOINT_URL",
    "TRAINYARD_UPLOAD_ADDRESS",
    "TRAINYARD_ORCHESTRATOR_ADDRESS",
    "TRAINYARD_JOBRUNNER_ADDRESS",
    "TRAINYARD_JOBRUNNER_IMAGE_REGISTRY",
}
SECRET_KEYS = {
    "TRAINYARD_DATABASE_URL",
    "TRAINYARD_AUTH_SECRET",
    "TRAINYARD_AUTH_CLIENTS",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
}

CLUSTER_SCOPED_KINDS = {"Namespace", "ClusterRole", "ClusterRoleBinding"}


@dataclass(frozen=True)
class Doc:
    path: Path
    index: int
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.body.get("kind", "?"))

    @property
    def name(self) -> str:
        return str(self.body.get("metadata", {}).get("name", "?"))

    @property
    def namespace(self) -> str | None:
        namespace: str | None = self.body.get("metadata", {}).get("namespace")
        return namespace

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(DEPLOY_DIR)}#{self.index}:{self.kind}/{self.name}"


def _manifest_files() -> list[Path]:
    files = [*DEPLOY_DIR.rglob("*.yaml"), *DEPLOY_DIR.rglob("*.yml")]
    return sorted(p for p in files if p.resolve() != KUSTOMIZATION.resolve())


def _load_docs() -> list[Doc]:
    docs = []
    for path in _manifest_files():
        with path.open(encoding="utf-8") as fh:
            for index, body in enumerate(yaml.safe_load_all(fh)):
                if body is not None:
                    docs.append(Doc(path, index, body))
    return docs


DOCS = _load_docs()


def _of_kind(*kinds: str) -> list[Doc]:
    return [d for d in DOCS if d.kind in kinds]


def _params(docs: list[Doc]) -> list[Any]:
    return [pytest.param(d, id=d.id) for d in docs]


def _find(kind: str, name: str, namespace: str | None = APP_NAMESPACE) -> Doc:
    matches = [d for d in DOCS if d.kind == kind and d.name == name and d.namespace == namespace]
    assert len(matches) == 1, f"expected exactly one {kind} {namespace}/{name}, got {len(matches)}"
    return matches[0]


def _pod_spec(doc: Doc) -> dict[str, Any]:
    spec: dict[str, Any] = doc.body["spec"]["template"]["spec"]
    return spec


def _containers(doc: Doc) -> Iterator[dict[str, Any]]:
    spec = _pod_spec(doc)
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def _container_ports(doc: Doc) -> dict[str, int]:
    return {
        p["name"]: p["containerPort"]
        for c in _pod_spec(doc)["containers"]
        for p in c.get("ports", [])
        if "name" in p
    }


DEPLOYMENTS = _of_kind("Deployment")
GRPC_DEPLOYMENTS = [d for d in DEPLOYMENTS if d.name in GRPC_SERVICES]


# --------------------------------------------------------------------------- schema


def test_manifests_found() -> None:
    assert DOCS, f"no manifests under {DEPLOY_DIR}"


@pytest.mark.parametrize("doc", _params(DOCS))
def test_schema_valid(doc: Doc) -> None:
    error = None
    try:
        kubernetes_validate.validate(doc.body, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = "/".join(str(p) for p in exc.path) or "<root>"
        error = f"{where}: {exc.message}"
    except kubernetes_validate.SchemaNotFoundError as exc:
        error = exc.message
    # Fail outside the except block so the report is one line, not the whole schema.
    if error is not None:
        pytest.fail(f"{doc.id} (Kubernetes {K8S_VERSION}): {error}")


@pytest.mark.parametrize("doc", _params(DOCS))
def test_namespace_and_labels(doc: Doc) -> None:
    if doc.kind in CLUSTER_SCOPED_KINDS:
        assert doc.namespace is None, f"{doc.id}: cluster-scoped object with a namespace"
    else:
        assert doc.namespace in {APP_NAMESPACE, JOBS_NAMESPACE}, (
            f"{doc.id}: namespace must be set explicitly, got {doc.namespace!r}"
        )
    labels = doc.body["metadata"].get("labels", {})
    assert labels.get("app.kubernetes.io/part-of") == "trainyard", doc.id


def test_unique_objects() -> None:
    keys = [(d.kind, d.namespace, d.name) for d in DOCS]
    duplicates = {k for k in keys if keys.count(k) > 1}
    assert not duplicates


def test_namespaces() -> None:
    assert {d.name for d in _of_kind("Namespace")} == {APP_NAMESPACE, JOBS_NAMESPACE}


# ---------------------------------------------------------------------- kustomization


def _kustomization() -> dict[str, Any]:
    with KUSTOMIZATION.open(encoding="utf-8") as fh:
        kustomization: dict[str, Any] = yaml.safe_load(fh)
    return kustomization


def test_kustomization_resources_exist() -> None:
    resources = _kustomization()["resources"]
    assert len(resources) == len(set(resources)), "duplicate kustomization resources"
    missing = [r for r in resources if not (DEPLOY_DIR / r).is_file()]
    assert not missing, f"kustomization lists missing files: {missing}"


def test_kustomization_lists_every_manifest() -> None:
    listed = {(DEPLOY_DIR / r).resolve() for r in _kustomization()["resources"]}
    unlisted = [
        str(p.relative_to(DEPLOY_DIR)) for p in _manifest_files() if p.resolve() not in listed
    ]
    assert not unlisted, f"manifests not in kustomization.yaml: {unlisted}"


def test_kustomization_image() -> None:
    kust = _kustomization()
    assert kust["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kust["kind"] == "Kustomization"
    assert [i["name"] for i in kust.get("images", [])] == [IMAGE_NAME]
    # A top-level namespace would move the jobrunner Role out of trainyard-jobs.
    assert "namespace" not in kust


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kustomize_build() -> None:
    proc = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY_DIR)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    built = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert len(built) == len(DOCS)
    roles = [d for d in built if d["kind"] in {"Role", "RoleBinding"}]
    assert roles
    assert all(d["metadata"]["namespace"] == JOBS_NAMESPACE for d in roles)


# ------------------------------------------------------------------------ workloads


def test_expected_deployments() -> None:
    names = {d.name for d in DEPLOYMENTS}
    assert names == {*GRPC_SERVICES, GATEWAY}
    assert all(d.namespace == APP_NAMESPACE for d in DEPLOYMENTS)


@pytest.mark.parametrize("doc", _params(DEPLOYMENTS))
def test_container_resources(doc: Doc) -> None:
    for c in _containers(doc):
        resources = c.get("resources", {})
        for section in ("requests", "limits"):
            for res in ("cpu", "memory"):
                assert res in resources.get(section, {}), (
                    f"{doc.id}: container {c['name']} lacks resources.{section}.{res}"
                )


@pytest.mark.parametrize("doc", _params(DEPLOYMENTS))
def test_pod_security(doc: Doc) -> None:
    spec = _pod_spec(doc)
    psc = spec.get("securityContext", {})
    assert psc.get("runAsNonRoot") is True, doc.id
    assert psc.get("runAsUser") == UID, doc.id
    assert psc.get("runAsGroup") == UID, doc.id
    assert psc.get("fsGroup") == UID, doc.id
    assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", doc.id
    for c in _containers(doc):
        csc = c.get("securityContext", {})
        where = f"{doc.id}: container {c['name']}"
        assert csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, where
        assert csc.get("readOnlyRootFilesystem") is True, where
        assert csc.get("allowPrivilegeEscalation") is False, where
        assert csc.get("privileged", False) is False, where
        assert csc.get("capabilities", {}).get("drop") == ["ALL"], where
        assert not csc.get("capabilities", {}).get("add"), where
    for host_ns in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(host_ns), f"{doc.id}: {host_ns} must not be used"


@pytest.mark.parametrize("doc", _params(DEPLOYMENTS))
def test_tmp_scratch_and_grace_period(doc: Doc) -> None:
    spec = _pod_spec(doc)
    assert spec.get("terminationGracePeriodSeconds") == 30, doc.id
    empty_dirs = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
    for c in spec["containers"]:
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        assert mounts.get("/tmp") in empty_dirs, f"{doc.id}: {c['name']} needs an emptyDir at /tmp"


@pytest.mark.parametrize("doc", _params(DEPLOYMENTS))
def test_image_and_entrypoint(doc: Doc) -> None:
    for c in _containers(doc):
        image = c["image"]
        ref = image.split("@", 1)[0]
        repo = ref.rsplit(":", 1)[0] if ":" in ref.rsplit("/", 1)[-1] else ref
        assert repo == IMAGE_NAME, f"{doc.id}: image {image!r} is not rewritten by kustomize"
        assert c.get("command") == ["trainyard"], doc.id


@pytest.mark.parametrize("doc", _params(DEPLOYMENTS))
def test_service_account(doc: Doc) -> None:
    spec = _pod_spec(doc)
    sa_name = spec.get("serviceAccountName")
    assert sa_name, f"{doc.id}: serviceAccountName must be set"
    sa = _find("ServiceAccount", sa_name, doc.namespace)
    sa_mount = sa.body.get("automountServiceAccountToken", True)
    mount = spec.get("automountServiceAccountToken", sa_mount)
    wants_token = doc.name == "jobrunner"
    assert mount is wants_token, f"{doc.id}: automountServiceAccountToken must be {wants_token}"


def test_one_service_account_per_workload() -> None:
    used = [_pod_spec(d)["serviceAccountName"] for d in DEPLOYMENTS]
    assert len(used) == len(set(used)), "workloads must not share a ServiceAccount"
    assert {d.name for d in _of_kind("ServiceAccount")} == set(used)


# -------------------------------------------------------------------- gRPC services


@pytest.mark.parametrize("doc", _params(GRPC_DEPLOYMENTS))
def test_grpc_deployment(doc: Doc) -> None:
    port = GRPC_SERVICES[doc.name]
    (container,) = _pod_spec(doc)["containers"]
    assert container["args"] == [
        "serve",
        doc.name,
        "--host",
        "0.0.0.0",
        "--port",
        str(port),
        "--metrics-port",
        "9090",
    ]
    assert _container_ports(doc) == {"grpc": port, "metrics": METRICS_PORT}
    for probe in ("readinessProbe", "livenessProbe"):
        grpc_probe = container.get(probe, {}).get("grpc")
        assert grpc_probe == {"port": port, "service": ""}, f"{doc.id}: {probe} must be gRPC"
    annotations = doc.body["spec"]["template"]["metadata"].get("annotations", {})
    assert annotations.get("prometheus.io/scrape") == "true"
    assert annotations.get("prometheus.io/port") == str(METRICS_PORT)
    assert annotations.get("prometheus.io/path") == "/metrics"
    env_from = container.get("envFrom", [])
    assert {"configMapRef": {"name": "trainyard-config"}} in env_from
    assert {"secretRef": {"name": "trainyard-secrets"}} in env_from


def test_jobrunner_env() -> None:
    (container,) = _pod_spec(_find("Deployment", "jobrunner"))["containers"]
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert env["TRAINYARD_JOBRUNNER_BACKEND"] == "kubernetes"
    assert env["TRAINYARD_JOBRUNNER_NAMESPACE"] == JOBS_NAMESPACE


@pytest.mark.parametrize("name", sorted(GRPC_SERVICES))
def test_grpc_service(name: str) -> None:
    svc = _find("Service", name).body["spec"]
    assert svc.get("type", "ClusterIP") == "ClusterIP"
    grpc_ports = [p for p in svc["ports"] if p.get("name") == "grpc"]
    assert len(grpc_ports) == 1
    assert grpc_ports[0]["port"] == GRPC_SERVICES[name]
    assert grpc_ports[0].get("appProtocol") == "kubernetes.io/h2c"


# -------------------------------------------------------------------------- gateway


def test_gateway() -> None:
    doc = _find("Deployment", GATEWAY)
    (container,) = _pod_spec(doc)["containers"]
    args = container["args"]
    assert args[:6] == [
        "gateway",
        "run",
        "--http-port",
        str(GATEWAY_HTTP_PORT),
        "--admin-port",
        str(GATEWAY_ADMIN_PORT),
    ]
    upstreams = [args[i + 1] for i, a in enumerate(args) if a == "--upstream"]
    assert upstreams == [f"{n}={n}:{p}" for n, p in GRPC_SERVICES.items()]
    ports = _container_ports(doc)
    assert ports == {"http": GATEWAY_HTTP_PORT, "admin": GATEWAY_ADMIN_PORT}
    for probe in ("readinessProbe", "livenessProbe"):
        http_get = container[probe]["httpGet"]
        assert http_get["path"] == "/ready"
        assert ports.get(http_get["port"], http_get["port"]) == GATEWAY_ADMIN_PORT

    svc = _find("Service", GATEWAY).body["spec"]
    assert svc.get("type", "ClusterIP") == "ClusterIP"
    (port,) = svc["ports"]
    assert port["port"] == 80
    assert ports.get(port["targetPort"], port["targetPort"]) == GATEWAY_HTTP_PORT


# ------------------------------------------------------------------ service wiring


@pytest.mark.parametrize("doc", _params(_of_kind("Service")))
def test_service_selects_a_deployment(doc: Doc) -> None:
    selector = doc.body["spec"].get("selector")
    assert selector, f"{doc.id}: Service without selector"
    targets = [
        d
        for d in DEPLOYMENTS
        if d.namespace == doc.namespace
        and selector.items() <= d.body["spec"]["template"]["metadata"]["labels"].items()
    ]
    assert len(targets) == 1, f"{doc.id}: selector {selector} matches {[d.id for d in targets]}"
    ports = _container_ports(targets[0])
    for port in doc.body["spec"]["ports"]:
        target = port.get("targetPort", port["port"])
        if isinstance(target, str):
            assert target in ports, f"{doc.id}: targetPort {target!r} is not a container port"
        else:
            assert target in ports.values(), f"{doc.id}: targetPort {target} is not exposed"


@pytest.mark.parametrize("doc", _params(DEPLOYMENTS))
def test_deployment_selector_matches_template(doc: Doc) -> None:
    selector = doc.body["spec"]["selector"]["matchLabels"]
    labels = doc.body["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()


# ------------------------------------------------------------------- configuration


def test_config_map() -> None:
    data = _find("ConfigMap", "trainyard-config").body["data"]
    assert set(data) >= CONFIG_KEYS
    assert not set(data) & SECRET_KEYS, "secrets must not live in the ConfigMap"
    assert data["TRAINYARD_LOG_FORMAT"] == "json"
    assert data["TRAINYARD_STORAGE_BACKEND"] == "s3"
    for name in ("upload", "orchestrator", "jobrunner"):
        address = data[f"TRAINYARD_{name.upper()}_ADDRESS"]
        assert address == f"{name}:{GRPC_SERVICES[name]}"


def test_secret_has_placeholders_only() -> None:
    secret = _find("Secret", "trainyard-secrets").body
    data = secret.get("stringData", {})
    assert set(data) == SECRET_KEYS
    assert "data" not in secret
    assert all("CHANGE_ME" in v for v in data.values()), "secret values must be placeholders"
    assert data["TRAINYARD_DATABASE_URL"].startswith("postgresql+asyncpg://")


@pytest.mark.parametrize("doc", _params(DEPLOYMENTS))
def test_env_references_resolve(doc: Doc) -> None:
    keys = {
        "ConfigMap": {d.name: set(d.body.get("data", {})) for d in _of_kind("ConfigMap")},
        "Secret": {
            d.name: set(d.body.get("stringData", {})) | set(d.body.get("data", {}))
            for d in _of_kind("Secret")
        },
    }
    for c in _containers(doc):
        for src in c.get("envFrom", []):
            for field, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                if field in src:
                    assert src[field]["name"] in keys[kind], f"{doc.id}: unknown {kind}"
        for env in c.get("env", []):
            value_from = env.get("valueFrom", {})
            for field, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                if field in value_from:
                    ref = value_from[field]
                    assert ref["key"] in keys[kind].get(ref["name"], set()), (
                        f"{doc.id}: {env['name']} refers to missing {kind} key {ref}"
                    )


# ----------------------------------------------------------------------------- RBAC


RBAC_DOCS = _of_kind("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")


@pytest.mark.parametrize("doc", _params(RBAC_DOCS))
def test_rbac_has_no_wildcards(doc: Doc) -> None:
    for rule in doc.body.get("rules", []):
        for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
            assert not any("*" in v for v in rule.get(field, [])), f"{doc.id}: wildcard in {field}"


def test_rbac_is_namespaced_jobrunner_only() -> None:
    assert not _of_kind("ClusterRole", "ClusterRoleBinding")
    assert [(d.kind, d.namespace, d.name) for d in RBAC_DOCS] == [
        ("Role", JOBS_NAMESPACE, "trainyard-jobrunner"),
        ("RoleBinding", JOBS_NAMESPACE, "trainyard-jobrunner"),
    ]


def test_jobrunner_role_rules() -> None:
    role = _find("Role", "trainyard-jobrunner", JOBS_NAMESPACE).body
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert granted == JOBRUNNER_RULES


def test_jobrunner_role_binding() -> None:
    binding = _find("RoleBinding", "trainyard-jobrunner", JOBS_NAMESPACE).body
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "trainyard-jobrunner",
    }
    jobrunner_sa = _pod_spec(_find("Deployment", "jobrunner"))["serviceAccountName"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": jobrunner_sa, "namespace": APP_NAMESPACE}
    ]
