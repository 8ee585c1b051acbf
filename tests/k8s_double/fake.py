"""FakeKubernetes: the public entry point of the API server double."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from kubernetes import client

from ._util import JSON, normalize_image
from .apiserver import JOBS, Cluster
from .controller import JobController
from .kubelet import PODS, SECRETS, ConfigData, Kubelet, ProcessInfo, RuntimeConfig
from .server import ApiServer, RecordedRequest
from .store import Store

KnownImages = Iterable[str] | Mapping[str, Sequence[str] | None]


class FakeKubernetes:
    """A Kubernetes API server on 127.0.0.1 whose pods are local subprocesses.

    known_images: None accepts every image. Otherwise only these images can be
        "pulled" (compared after normalisation, so "python:3.11" equals
        "docker.io/library/python:3.11"); pods using any other image stay Pending
        with ErrImagePull, then ImagePullBackOff. A mapping gives each image its
        ENTRYPOINT, used when a container sets args but no command.
    termination_grace_seconds: cap on the SIGTERM -> SIGKILL grace period
        (pods ask for terminationGracePeriodSeconds, default 30 s; a smaller
        value, including 0, is honoured).
    image_pull_backoff_seconds: how long ErrImagePull shows before ImagePullBackOff.
    retry_backoff_seconds: the job controller's pod-retry back-off base (the real
        one is 10 s, doubling); 0 retries at once.
    restart_backoff_seconds: CrashLoopBackOff base delay for restartPolicy OnFailure.
    inherit_env: names of this process's environment variables passed to every
        container (PATH by default); extra_env adds fixed ones.
    """

    def __init__(
        self,
        known_images: KnownImages | None = None,
        *,
        termination_grace_seconds: float = 1.0,
        image_pull_backoff_seconds: float = 0.2,
        retry_backoff_seconds: float = 0.0,
        restart_backoff_seconds: float = 0.0,
        inherit_env: Sequence[str] = ("PATH",),
        extra_env: Mapping[str, str] | None = None,
        watch_history: int = 10_000,
    ) -> None:
        self._scratch = Path(tempfile.mkdtemp(prefix="k8s-double-"))
        images: dict[str, list[str] | None] | None = None
        if known_images is not None:
            images = {}
            if isinstance(known_images, Mapping):
                for image, entrypoint in known_images.items():
                    images[normalize_image(image)] = list(entrypoint) if entrypoint else None
            else:
                for image in known_images:
                    images[normalize_image(image)] = None
        self.store = Store(history_limit=watch_history)
        self._config = RuntimeConfig(
            known_images=images,
            scratch_root=self._scratch,
            termination_grace_cap=termination_grace_seconds,
            image_pull_backoff=image_pull_backoff_seconds,
            restart_backoff=restart_backoff_seconds,
            inherit_env=tuple(inherit_env),
            extra_env=dict(extra_env or {}),
        )
        self.config_data = ConfigData(self.store)
        self.kubelet = Kubelet(self.store, self._config, self.config_data)
        self.cluster = Cluster(self.store, self.kubelet)
        self.controller = JobController(self.cluster, retry_backoff=retry_backoff_seconds)
        self.server = ApiServer(self.cluster)
        self._config.api_port = self.server.port
        self._started = False
        self._stopped = False

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> Self:
        if not self._started:
            self._started = True
            self.controller.start()
            self.server.start()
        return self

    def stop(self) -> None:
        """Stop serving, kill every container process, remove scratch directories."""
        if self._stopped:
            return
        self._stopped = True
        self.store.close()
        with self.store.lock:
            self.kubelet.logs_changed.notify_all()
        self.server.stop()
        if self._started:
            self.controller.stop()
        self.kubelet.shutdown()
        shutil.rmtree(self._scratch, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- connection ---------------------------------------------------------------------

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def configuration(self) -> client.Configuration:
        """A client Configuration for this server (no auth, no proxy)."""
        configuration = client.Configuration(host=self.url)
        configuration.proxy = None
        configuration.no_proxy = None
        return configuration

    def api_client(self) -> client.ApiClient:
        return client.ApiClient(configuration=self.configuration())

    # -- cluster contents tests may set up -------------------------------------------------

    def add_image(self, image: str, entrypoint: Sequence[str] | None = None) -> None:
        """Make an image pullable (only meaningful when known_images was given)."""
        if self._config.known_images is None:
            self._config.known_images = {}
        self._config.known_images[normalize_image(image)] = list(entrypoint) if entrypoint else None

    def add_secret(self, namespace: str, name: str, data: Mapping[str, str]) -> JSON:
        """Create (or replace) an Opaque Secret with these values, as if someone had
        applied it: the API serves it and pods read it (secretKeyRef, envFrom.secretRef)."""
        with self.store.lock:
            self.store.delete(SECRETS, namespace, name)
            return self.cluster.create_secret(
                namespace, {"metadata": {"name": name}, "stringData": dict(data)}
            )

    def add_config_map(self, namespace: str, name: str, data: Mapping[str, str]) -> None:
        """Data for configMapKeyRef / envFrom.configMapRef."""
        self.config_data.put_config_map(namespace, name, data)

    # -- inspection helpers -----------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every HTTP request received so far, in order."""
        with self.server._requests_lock:
            return list(self.server.requests)

    def expire_watch_history(self) -> None:
        """Compact the history: watches resuming from before now get 410 Gone (open ones
        too, within a second), so clients must re-list."""
        self.store.compact()

    def watch_requests(self, resource: str = "") -> list[RecordedRequest]:
        """The watch requests received so far (`resource`: "jobs" or "pods" for one kind)."""
        return [
            r
            for r in self.requests
            if (r.query.get("watch") or [""])[-1].lower() in ("true", "1")
            and (not resource or r.path.endswith("/" + resource))
        ]

    @property
    def resource_version(self) -> int:
        return self.store.revision

    def job(self, name: str, namespace: str = "default") -> JSON | None:
        return self.store.get(JOBS, namespace, name)

    def jobs(self, namespace: str | None = None) -> list[JSON]:
        return self.store.list(JOBS, namespace)[0]

    def secret(self, name: str, namespace: str = "default") -> JSON | None:
        """The Secret as the API returns it (data base64-encoded)."""
        return self.store.get(SECRETS, namespace, name)

    def secrets(self, namespace: str | None = None) -> list[JSON]:
        return self.store.list(SECRETS, namespace)[0]

    def pod(self, name: str, namespace: str = "default") -> JSON | None:
        return self.store.get(PODS, namespace, name)

    def pods(self, namespace: str | None = None, job: str | None = None) -> list[JSON]:
        """Pod objects (as the API would return them), optionally of one job."""
        items = self.store.list(PODS, namespace)[0]
        if job is None:
            return items
        return [
            pod for pod in items if (pod["metadata"].get("labels") or {}).get("job-name") == job
        ]

    def pod_log(self, name: str, namespace: str = "default", container: str | None = None) -> str:
        """The current container instance's output, including pods already deleted."""
        for runtime in reversed(self.kubelet.runtimes()):
            if runtime.name == name and runtime.namespace == namespace:
                target = runtime.container(container) if container else runtime.containers[0]
                if target is None or not target.runs:
                    return ""
                with self.store.lock:
                    return target.runs[-1].log.text()
        raise KeyError(f"no pod {namespace}/{name} ever existed")

    def processes(self) -> list[ProcessInfo]:
        """Every process started for a container, oldest first (running or not)."""
        return self.kubelet.processes()

    def pod_pids(self, job: str, namespace: str = "default") -> list[int]:
        """PIDs of all container processes ever started for a job's pods."""
        return [p.pid for p in self.processes() if p.job == job and p.namespace == namespace]

    def running_pids(self) -> list[int]:
        """PIDs of container processes that have not exited (or not been reaped) yet."""
        return [p.pid for p in self.processes() if p.running]
