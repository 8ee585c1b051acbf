"""The one list of Trainyard's services. Everything that names the services derives from it:
runtime.settings (SERVICE_NAMES, DEFAULT_PORTS), services.py (settings class and app builder
of each), gateway.descriptors (what Envoy transcodes and the descriptor set), suite.py (the
start phases of `up`), and deploy/ (scripts/gen_deploy.py writes the manifests from it).

A new service is one entry here (plus its package, protos and `TRAINYARD_<NAME>_ADDRESS` field
in CommonSettings, which tests/test_catalogue.py asks for).

This module imports nothing of Trainyard: runtime.settings imports it, so references to code
are "module:attr" strings, loaded only where they are used.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Kubernetes:
    """How the service's Deployment differs from the common shape (deploy/)."""

    #: The comment heading its manifest: what it is, what is special about it.
    summary: str
    requests: tuple[str, str] = ("100m", "256Mi")  # cpu, memory
    limits: tuple[str, str] = ("1", "512Mi")
    #: Extra environment variables of the container, name -> value.
    env: tuple[tuple[str, str, str], ...] = ()  # (name, value, comment)
    #: Mounts a ServiceAccount token (only the job-runner talks to the Kubernetes API).
    api_token: bool = False
    #: Training pods in trainyard-jobs call it (job callbacks).
    called_by_jobs: bool = False
    #: Its address goes into the shared ConfigMap (other services call it).
    called_by_services: bool = False


@dataclass(frozen=True)
class Service:
    """One gRPC service process."""

    #: Its name: package trainyard.<name>, `trainyard serve <name>`, TRAINYARD_<NAME>_*.
    name: str
    #: gRPC port of the embedded mode, and of its Kubernetes Service.
    default_port: int
    #: `up` starts phase 0 first (services others call), then phase 1, ...
    phase: int
    #: Full names of the public proto services it serves (transcoded by Envoy).
    proto_services: tuple[str, ...]
    #: The generated modules that define them (their files go into Envoy's descriptor set).
    proto_modules: tuple[str, ...]
    #: "module:attr" of its settings class and of its async App builder.
    settings: str
    builder: str
    kubernetes: Kubernetes = field(default_factory=lambda: Kubernetes(summary=""))

    @property
    def env_prefix(self) -> str:
        return f"TRAINYARD_{self.name.upper()}_"


CATALOGUE: tuple[Service, ...] = (
    Service(
        name="upload",
        default_port=50051,
        phase=0,
        proto_services=("trainyard.api.upload.v1.UploadService",),
        proto_modules=("trainyard.api.upload.v1.service_pb2",),
        settings="trainyard.upload.settings:UploadSettings",
        builder="trainyard.upload.app:build",
        kubernetes=Kubernetes(
            summary="gRPC upload service (datasets and artifacts, stored in S3).",
            called_by_services=True,
        ),
    ),
    Service(
        name="orchestrator",
        default_port=50052,
        phase=1,
        proto_services=(
            "trainyard.api.orchestrator.v1.TrainService",
            "trainyard.api.orchestrator.v1.ModelService",
            "trainyard.api.auth.v1.AuthService",
        ),
        proto_modules=(
            "trainyard.api.orchestrator.v1.service_pb2",
            "trainyard.api.auth.v1.service_pb2",
        ),
        settings="trainyard.orchestrator.settings:OrchestratorSettings",
        builder="trainyard.orchestrator.app:build",
        kubernetes=Kubernetes(
            summary="gRPC orchestrator (model registry, trainings, predictions). Training pods\n"
            "in trainyard-jobs call back to it (see networkpolicies.yaml).",
            env=(
                (
                    "TRAINYARD_ORCHESTRATOR_ADVERTISE_ADDRESS",
                    "orchestrator.trainyard.svc.cluster.local:50052",
                    "Where trainer pods (namespace trainyard-jobs) call back.",
                ),
                (
                    "TRAINYARD_ORCHESTRATOR_TRAINER_IMAGE",
                    "trainyard:latest",
                    "The image of deploy/Dockerfile: services and trainers in one.",
                ),
            ),
            called_by_jobs=True,
            called_by_services=True,
        ),
    ),
    Service(
        name="jobrunner",
        default_port=50053,
        phase=0,
        proto_services=(
            "trainyard.api.jobrunner.v1.TrainingJobsService",
            "trainyard.api.jobrunner.v1.JobRunnerService",
        ),
        proto_modules=("trainyard.api.jobrunner.v1.service_pb2",),
        settings="trainyard.jobrunner.settings:JobrunnerSettings",
        builder="trainyard.jobrunner.app:build",
        kubernetes=Kubernetes(
            summary="runs training workloads as Kubernetes Jobs in trainyard-jobs. The only "
            "service\nthat gets an API token (see rbac-jobrunner.yaml).",
            env=(
                (
                    "TRAINYARD_JOBRUNNER_BACKEND",
                    "kubernetes",
                    "Must match the namespace of the Role in rbac-jobrunner.yaml.",
                ),
                ("TRAINYARD_JOBRUNNER_NAMESPACE", "trainyard-jobs", ""),
            ),
            api_token=True,
            called_by_services=True,
        ),
    ),
    Service(
        name="finetuning",
        default_port=50054,
        phase=1,
        proto_services=("trainyard.api.finetuning.v1.FinetuningService",),
        proto_modules=("trainyard.api.finetuning.v1.service_pb2",),
        settings="trainyard.finetuning.settings:FinetuningSettings",
        builder="trainyard.finetuning.app:build",
        kubernetes=Kubernetes(summary="gRPC fine-tuning service."),
    ),
    Service(
        name="clustering",
        default_port=50055,
        phase=1,
        proto_services=("trainyard.api.clustering.v1.ClusteringTrainingService",),
        proto_modules=("trainyard.api.clustering.v1.service_pb2",),
        settings="trainyard.clustering.settings:ClusteringSettings",
        builder="trainyard.clustering.app:build",
        kubernetes=Kubernetes(
            summary="gRPC clustering service (CPU- and memory-heavier than the others).",
            requests=("250m", "512Mi"),
            limits=("2", "2Gi"),
        ),
    ),
)

BY_NAME: dict[str, Service] = {s.name: s for s in CATALOGUE}


def service(name: str) -> Service:
    """The entry of `name`; KeyError naming the known services otherwise."""
    try:
        return BY_NAME[name]
    except KeyError:
        known = ", ".join(BY_NAME)
        raise KeyError(f"unknown service {name!r}; one of {known}") from None


def phases(catalogue: tuple[Service, ...] = CATALOGUE) -> tuple[tuple[str, ...], ...]:
    """Service names by start phase, in catalogue order within a phase."""
    numbers = sorted({s.phase for s in catalogue})
    return tuple(tuple(s.name for s in catalogue if s.phase == n) for n in numbers)
