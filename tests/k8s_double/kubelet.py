"""A local "kubelet": runs each pod's containers as real subprocesses.

Each container is started as its own process group (a stand-in for the
container's cgroup): when the main process exits, anything it left behind in
the group is SIGKILLed like a container teardown, and deleting a pod sends
SIGTERM to the group, then SIGKILL after the grace period.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import resource
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_CEILING
from pathlib import Path

from ._util import (
    JSON,
    container_id,
    normalize_image,
    now,
    parse_quantity,
    rfc3339,
)
from .logs import LogBuffer
from .store import Store

PODS = "pods"
SECRETS = "secrets"
DEFAULT_GRACE_SECONDS = 30
# Pods whose main container was killed by this signal with a memory limit set
# are reported as OOMKilled (the RLIMIT_AS stand-in for the cgroup OOM killer).
_OOM_MARKERS = (b"MemoryError", b"Cannot allocate memory", b"std::bad_alloc", b"out of memory")


class ConfigData:
    """Secret and ConfigMap data for secretKeyRef / configMapKeyRef / envFrom.

    Secrets are the API's objects in the store (their `data`, base64-decoded, as the kubelet
    reads them); the double has no ConfigMap endpoints, so tests register those here.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._config_maps: dict[tuple[str, str], dict[str, str]] = {}

    def secret(self, namespace: str, name: str) -> Mapping[str, str] | None:
        obj = self._store.get(SECRETS, namespace, name)
        if obj is None:
            return None
        # The kubelet hands a value's bytes over as they are (a Go string): bytes that are
        # not UTF-8 reach the process unchanged through surrogate escapes.
        return {
            key: base64.b64decode(value).decode("utf-8", "surrogateescape")
            for key, value in (obj.get("data") or {}).items()
        }

    def config_map(self, namespace: str, name: str) -> Mapping[str, str] | None:
        with self._lock:
            return self._config_maps.get((namespace, name))

    def put_config_map(self, namespace: str, name: str, data: Mapping[str, str]) -> None:
        with self._lock:
            self._config_maps[(namespace, name)] = dict(data)


@dataclass
class RuntimeConfig:
    # normalized image -> default entrypoint (None: no ENTRYPOINT); None: any image
    known_images: dict[str, list[str] | None] | None
    scratch_root: Path
    termination_grace_cap: float = 1.0
    image_pull_backoff: float = 0.2
    restart_backoff: float = 0.0
    # How often a pod held by a missing Secret/ConfigMap (or key) looks again.
    config_retry: float = 0.1
    inherit_env: tuple[str, ...] = ("PATH",)
    extra_env: dict[str, str] = field(default_factory=dict)
    api_host: str = "127.0.0.1"
    api_port: int = 0
    node_name: str = "fake-node"
    host_ip: str = "172.18.0.2"


@dataclass
class ProcessInfo:
    """One real OS process started for a container instance."""

    namespace: str
    pod: str
    pod_uid: str
    container: str
    job: str | None
    pid: int
    argv: list[str]
    started_at: datetime
    finished_at: datetime | None = None
    returncode: int | None = None  # as subprocess reports it (negative: signal)

    @property
    def running(self) -> bool:
        return self.returncode is None


@dataclass
class ContainerRun:
    """One instance of a container (restartPolicy OnFailure creates more)."""

    log: LogBuffer
    container_id: str
    started_at: datetime
    process: ProcessInfo | None = None
    popen: subprocess.Popen[bytes] | None = None
    terminated: JSON | None = None
    killed_by_kubelet: bool = False


@dataclass
class ContainerRuntime:
    spec: JSON
    runs: list[ContainerRun] = field(default_factory=list)
    state: JSON = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: JSON = field(default_factory=dict)
    restart_count: int = 0
    started: bool = False
    ready: bool = False
    pulled: bool = False
    finished: bool = False

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def image(self) -> str:
        return normalize_image(str(self.spec.get("image", "")))

    def exit_code(self) -> int | None:
        terminated = self.state.get("terminated")
        return None if terminated is None else int(terminated["exitCode"])


@dataclass
class PodRuntime:
    namespace: str
    name: str
    uid: str
    labels: dict[str, str]
    annotations: dict[str, str]
    spec: JSON
    containers: list[ContainerRuntime]
    owner_uid: str | None
    pod_ip: str
    start_time: datetime
    qos_class: str
    terminating: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    deletion_requested: bool = False
    grace_seconds: float = 0.0
    phase: str = "Pending"
    sandbox_ready: bool = False
    thread: threading.Thread | None = None
    # condition type -> (status, lastTransitionTime)
    condition_times: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def job_name(self) -> str | None:
        return self.labels.get("batch.kubernetes.io/job-name") or self.labels.get("job-name")

    def container(self, name: str) -> ContainerRuntime | None:
        for container in self.containers:
            if container.name == name:
                return container
        return None


class ContainerConfigError(Exception):
    """Raised while resolving env: the container stays in CreateContainerConfigError."""


def qos_class(containers: Sequence[JSON]) -> str:
    requests_seen = False
    guaranteed = True
    for container in containers:
        resources = container.get("resources") or {}
        limits = resources.get("limits") or {}
        requests = resources.get("requests") or {}
        if limits or requests:
            requests_seen = True
        for name in ("cpu", "memory"):
            limit = limits.get(name)
            request = requests.get(name, limit)
            if limit is None or request is None or parse_quantity(limit) != parse_quantity(request):
                guaranteed = False
    if not requests_seen:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


_VAR_REF = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")


def expand_vars(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes $(VAR) expansion for command, args and env values ($$ escapes)."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return _VAR_REF.sub(replace, text)


class Kubelet:
    def __init__(self, store: Store, config: RuntimeConfig, sources: ConfigData) -> None:
        self.store = store
        self.config = config
        self.sources = sources
        self.logs_changed = threading.Condition(store.lock)
        self._pods: dict[tuple[str, str], PodRuntime] = {}
        self._all_pods: list[PodRuntime] = []
        self._processes: list[ProcessInfo] = []
        self._ip_counter = 10
        self._stopping = False
        # Called (under the store lock) whenever a pod runtime finishes; the job
        # controller uses it to notice terminations promptly.
        self.on_pod_finished: Callable[[PodRuntime], None] | None = None

    # -- queries ---------------------------------------------------------------

    def runtime(self, namespace: str, name: str) -> PodRuntime | None:
        with self.store.lock:
            return self._pods.get((namespace, name))

    def runtimes(self) -> list[PodRuntime]:
        with self.store.lock:
            return list(self._all_pods)

    def processes(self) -> list[ProcessInfo]:
        with self.store.lock:
            return list(self._processes)

    def image_known(self, image: str) -> bool:
        known = self.config.known_images
        return known is None or normalize_image(image) in known

    # -- pod lifecycle -----------------------------------------------------------

    def start_pod(self, pod: JSON) -> PodRuntime:
        """Bind a freshly created pod to this node and start running it."""
        meta = pod["metadata"]
        spec = pod["spec"]
        with self.store.lock:
            self._ip_counter += 1
            ip = f"10.244.0.{self._ip_counter % 250 + 2}"
            runtime = PodRuntime(
                namespace=meta["namespace"],
                name=meta["name"],
                uid=meta["uid"],
                labels=dict(meta.get("labels") or {}),
                annotations=dict(meta.get("annotations") or {}),
                spec=spec,
                containers=[ContainerRuntime(spec=c) for c in spec.get("containers", [])],
                owner_uid=next(
                    (
                        ref["uid"]
                        for ref in meta.get("ownerReferences") or []
                        if ref.get("controller")
                    ),
                    None,
                ),
                pod_ip=ip,
                start_time=now(),
                qos_class=qos_class(spec.get("containers", [])),
            )
            self._pods[(runtime.namespace, runtime.name)] = runtime
            self._all_pods.append(runtime)
            thread = threading.Thread(
                target=self._run_pod, args=(runtime,), name=f"kubelet-{runtime.name}", daemon=True
            )
            runtime.thread = thread
        thread.start()
        return runtime

    def delete_pod(
        self, namespace: str, name: str, grace_seconds: int | None = None
    ) -> JSON | None:
        """Graceful pod deletion: mark deletionTimestamp, stop containers, remove.

        Returns the pod object as the API server's DELETE does (None if absent).
        """
        with self.store.lock:
            pod = self.store.get(PODS, namespace, name)
            if pod is None:
                return None
            runtime = self._pods.get((namespace, name))
            if grace_seconds is None:
                grace_seconds = int(
                    pod["spec"].get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
                )
            finished = runtime is None or runtime.done.is_set()
            if finished or pod["status"].get("phase") in ("Succeeded", "Failed"):
                grace_seconds = 0
            meta = pod["metadata"]
            current_grace = meta.get("deletionGracePeriodSeconds")
            if meta.get("deletionTimestamp") is None or grace_seconds < int(current_grace or 0):
                # A second DELETE may only shorten the grace period.
                stamp = rfc3339(now() + timedelta(seconds=grace_seconds))

                def mark(obj: JSON) -> None:
                    obj["metadata"]["deletionTimestamp"] = stamp
                    obj["metadata"]["deletionGracePeriodSeconds"] = grace_seconds

                pod = self.store.update(PODS, namespace, name, mark) or pod
            if runtime is not None:
                effective = min(float(grace_seconds), self.config.termination_grace_cap)
                if not runtime.deletion_requested:
                    runtime.deletion_requested = True
                    runtime.grace_seconds = effective
                    self._terminate(runtime)
                elif effective < runtime.grace_seconds:
                    runtime.grace_seconds = effective
            removed = self.maybe_remove(namespace, name)
            return removed if removed is not None else pod

    def maybe_remove(self, namespace: str, name: str) -> JSON | None:
        """Remove a deleted pod once its containers stopped and finalizers are gone."""
        with self.store.lock:
            pod = self.store.get(PODS, namespace, name)
            if pod is None or pod["metadata"].get("deletionTimestamp") is None:
                return None
            if pod["metadata"].get("finalizers"):
                return None
            runtime = self._pods.get((namespace, name))
            if runtime is not None and not runtime.done.is_set():
                return None
            self._pods.pop((namespace, name), None)
            removed = self.store.delete(PODS, namespace, name)
            self.logs_changed.notify_all()
            return removed

    def shutdown(self, timeout: float = 5.0) -> None:
        with self.store.lock:
            self._stopping = True
            runtimes = list(self._all_pods)
            for runtime in runtimes:
                runtime.grace_seconds = 0.0
                self._terminate(runtime)
            self.logs_changed.notify_all()
        deadline = time.monotonic() + timeout
        for runtime in runtimes:
            if runtime.thread is not None:
                runtime.thread.join(max(0.0, deadline - time.monotonic()))
        for info in self.processes():
            if info.running:
                with contextlib.suppress(OSError):
                    os.killpg(info.pid, signal.SIGKILL)

    # -- internals ---------------------------------------------------------------

    def _terminate(self, runtime: PodRuntime) -> None:
        if runtime.terminating.is_set():
            return
        runtime.terminating.set()
        threading.Thread(
            target=self._kill_sequence, args=(runtime,), name=f"kill-{runtime.name}", daemon=True
        ).start()

    def _running_processes(self, runtime: PodRuntime) -> list[ContainerRun]:
        with self.store.lock:
            return [
                run
                for container in runtime.containers
                for run in container.runs[-1:]
                if run.process is not None and run.process.running
            ]

    def _kill_sequence(self, runtime: PodRuntime) -> None:
        """SIGTERM every container's process group, SIGKILL after the grace period."""
        runs = self._running_processes(runtime)
        for run in runs:
            run.killed_by_kubelet = True
            _signal_group(run, signal.SIGTERM if runtime.grace_seconds > 0 else signal.SIGKILL)
        started = time.monotonic()
        while time.monotonic() < started + runtime.grace_seconds and self._running_processes(
            runtime
        ):
            time.sleep(0.01)
        for run in self._running_processes(runtime):
            run.killed_by_kubelet = True
            _signal_group(run, signal.SIGKILL)

    def _publish(self, runtime: PodRuntime) -> None:
        with self.store.lock:
            status = self._pod_status(runtime)

            def apply(obj: JSON) -> None:
                obj["status"] = status

            self.store.update(PODS, runtime.namespace, runtime.name, apply)

    def _run_pod(self, runtime: PodRuntime) -> None:
        try:
            self._schedule(runtime)
            if not self._pull_images(runtime):
                runtime.terminating.wait()
                return
            envs = self._resolve_envs(runtime)
            if envs is None:
                return
            supervisors = [
                threading.Thread(
                    target=self._supervise,
                    args=(runtime, container, envs[container.name]),
                    name=f"container-{runtime.name}-{container.name}",
                    daemon=True,
                )
                for container in runtime.containers
            ]
            for supervisor in supervisors:
                supervisor.start()
            for supervisor in supervisors:
                supervisor.join()
        finally:
            with self.store.lock:
                runtime.phase = self._final_phase(runtime)
                runtime.sandbox_ready = False
                for container in runtime.containers:
                    container.ready = False
                runtime.done.set()
                self._publish(runtime)
                self.logs_changed.notify_all()
                if self.on_pod_finished is not None:
                    self.on_pod_finished(runtime)
                if runtime.deletion_requested:
                    self.maybe_remove(runtime.namespace, runtime.name)

    def _resolve_envs(self, runtime: PodRuntime) -> dict[str, dict[str, str]] | None:
        """Every container's environment; None if the pod was deleted first. A missing
        Secret, ConfigMap or key holds the containers in CreateContainerConfigError and is
        tried again (as the kubelet's pod sync does), so one created later still starts them."""
        while True:
            try:
                return {c.name: self._container_env(runtime, c) for c in runtime.containers}
            except ContainerConfigError as exc:
                waiting = {"reason": "CreateContainerConfigError", "message": str(exc)}
                with self.store.lock:
                    changed = any(c.state != {"waiting": waiting} for c in runtime.containers)
                    for container in runtime.containers:
                        container.state = {"waiting": dict(waiting)}
                if changed:
                    self._publish(runtime)
            if runtime.terminating.wait(self.config.config_retry):
                return None

    def _schedule(self, runtime: PodRuntime) -> None:
        with self.store.lock:

            def bind(obj: JSON) -> None:
                obj["spec"]["nodeName"] = self.config.node_name

            self.store.update(PODS, runtime.namespace, runtime.name, bind)
            runtime.sandbox_ready = True
        self._publish(runtime)

    def _pull_images(self, runtime: PodRuntime) -> bool:
        missing = [c for c in runtime.containers if not self.image_known(str(c.spec["image"]))]
        if not missing:
            with self.store.lock:
                for container in runtime.containers:
                    container.pulled = True
            return True
        with self.store.lock:
            for container in missing:
                image = container.image
                container.state = {
                    "waiting": {
                        "reason": "ErrImagePull",
                        "message": (
                            f'rpc error: code = NotFound desc = failed to pull and unpack image "'
                            f'{image}": failed to resolve reference "{image}": {image}: not found'
                        ),
                    }
                }
        self._publish(runtime)
        if runtime.terminating.wait(self.config.image_pull_backoff):
            return False
        with self.store.lock:
            for container in missing:
                container.state = {
                    "waiting": {
                        "reason": "ImagePullBackOff",
                        "message": f'Back-off pulling image "{container.spec["image"]}"',
                    }
                }
        self._publish(runtime)
        return False

    def _container_env(self, runtime: PodRuntime, container: ContainerRuntime) -> dict[str, str]:
        env: dict[str, str] = {}
        for name in self.config.inherit_env:
            if name in os.environ:
                env[name] = os.environ[name]
        env.update(
            {
                "HOSTNAME": runtime.name,
                "HOME": str(self._scratch_dir(runtime)),
                "KUBERNETES_SERVICE_HOST": self.config.api_host,
                "KUBERNETES_SERVICE_PORT": str(self.config.api_port),
            }
        )
        env.update(self.config.extra_env)
        spec = container.spec
        for source in spec.get("envFrom") or []:
            prefix = source.get("prefix", "")
            if "secretRef" in source:
                ref = source["secretRef"]
                data = self.sources.secret(runtime.namespace, ref["name"])
                if data is None and not ref.get("optional"):
                    raise ContainerConfigError(f'secret "{ref["name"]}" not found')
            else:
                ref = source.get("configMapRef") or {}
                data = self.sources.config_map(runtime.namespace, ref.get("name", ""))
                if data is None and not ref.get("optional"):
                    raise ContainerConfigError(f'configmap "{ref.get("name")}" not found')
            for key, item in (data or {}).items():
                env[prefix + key] = item
        defined: dict[str, str] = {}
        for entry in spec.get("env") or []:
            name = entry["name"]
            if entry.get("valueFrom") is not None:
                resolved = self._value_from(runtime, container, entry["valueFrom"])
                if resolved is None:
                    continue
                value = resolved
            else:
                value = expand_vars(str(entry.get("value") or ""), defined)
            env[name] = value
            defined[name] = value
        return env

    def _value_from(
        self, runtime: PodRuntime, container: ContainerRuntime, source: JSON
    ) -> str | None:
        if source.get("fieldRef"):
            return self._field_ref(runtime, str(source["fieldRef"]["fieldPath"]))
        if source.get("resourceFieldRef"):
            ref = source["resourceFieldRef"]
            target = container
            if ref.get("containerName"):
                target = runtime.container(ref["containerName"]) or container
            kind, _, name = str(ref["resource"]).partition(".")
            resources = target.spec.get("resources") or {}
            raw = (resources.get(kind) or {}).get(name)
            if raw is None:
                raw = "1Ti" if name == "memory" else "8"  # node allocatable stand-in
            divisor = parse_quantity(ref.get("divisor") or "1")
            value = (parse_quantity(raw) / divisor).to_integral_value(rounding=ROUND_CEILING)
            return str(int(value))
        for kind, fetch in (
            ("secretKeyRef", self.sources.secret),
            ("configMapKeyRef", self.sources.config_map),
        ):
            ref = source.get(kind)
            if not ref:
                continue
            label = "Secret" if kind == "secretKeyRef" else "ConfigMap"
            data = fetch(runtime.namespace, ref["name"])
            if data is None:
                if ref.get("optional"):
                    return None
                lowered = "secret" if kind == "secretKeyRef" else "configmap"
                raise ContainerConfigError(f'{lowered} "{ref["name"]}" not found')
            if ref["key"] not in data:
                if ref.get("optional"):
                    return None
                raise ContainerConfigError(
                    f"couldn't find key {ref['key']} in {label} {runtime.namespace}/{ref['name']}"
                )
            return data[ref["key"]]
        return None

    def _field_ref(self, runtime: PodRuntime, path: str) -> str:
        match = re.match(r"^metadata\.(labels|annotations)\['(.+)'\]$", path)
        if match:
            source = runtime.labels if match.group(1) == "labels" else runtime.annotations
            return source.get(match.group(2), "")
        values = {
            "metadata.name": runtime.name,
            "metadata.namespace": runtime.namespace,
            "metadata.uid": runtime.uid,
            "spec.nodeName": self.config.node_name,
            "spec.serviceAccountName": str(runtime.spec.get("serviceAccountName", "default")),
            "status.podIP": runtime.pod_ip,
            "status.podIPs": runtime.pod_ip,
            "status.hostIP": self.config.host_ip,
            "status.hostIPs": self.config.host_ip,
        }
        if path not in values:
            raise ContainerConfigError(f"unsupported fieldRef fieldPath {path!r}")
        return values[path]

    def _scratch_dir(self, runtime: PodRuntime) -> Path:
        path = self.config.scratch_root / runtime.namespace / runtime.name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _argv(self, container: ContainerRuntime, env: Mapping[str, str]) -> list[str]:
        spec = container.spec
        command = list(spec.get("command") or [])
        args = list(spec.get("args") or [])
        if not command:
            known = self.config.known_images
            entrypoint = (known or {}).get(container.image)
            command = list(entrypoint or [])
        return [expand_vars(str(part), env) for part in command + args]

    def _memory_limit(self, container: ContainerRuntime) -> int | None:
        limits = (container.spec.get("resources") or {}).get("limits") or {}
        if "memory" not in limits:
            return None
        return int(parse_quantity(limits["memory"]))

    def _supervise(
        self, runtime: PodRuntime, container: ContainerRuntime, env: dict[str, str]
    ) -> None:
        policy = str(runtime.spec.get("restartPolicy", "Always"))
        while not runtime.terminating.is_set():
            run = self._start_container(runtime, container, env)
            if run.popen is not None:
                self._wait_container(runtime, container, run)
            assert run.terminated is not None
            exit_code = int(run.terminated["exitCode"])
            restart = policy == "Always" or (policy == "OnFailure" and exit_code != 0)
            if restart and not runtime.terminating.is_set() and not self._stopping:
                delay = self.config.restart_backoff * (2 ** min(container.restart_count, 5))
                with self.store.lock:
                    container.last_state = {"terminated": run.terminated}
                    container.restart_count += 1
                    container.ready = False
                    container.state = {
                        "waiting": {
                            "reason": "CrashLoopBackOff",
                            "message": (
                                f"back-off {delay:g}s restarting failed container={container.name}"
                                f" pod={runtime.name}_{runtime.namespace}({runtime.uid})"
                            ),
                        }
                    }
                if delay > 0:
                    self._publish(runtime)
                    if runtime.terminating.wait(delay):
                        break
                continue
            with self.store.lock:
                container.state = {"terminated": run.terminated}
                container.ready = False
                container.finished = True
            break
        with self.store.lock:
            container.finished = True
            container.ready = False
        self._publish(runtime)

    def _start_container(
        self, runtime: PodRuntime, container: ContainerRuntime, env: dict[str, str]
    ) -> ContainerRun:
        started = now()
        run = ContainerRun(log=LogBuffer(), container_id=container_id(), started_at=started)
        argv = self._argv(container, env)
        workdir = container.spec.get("workingDir")
        cwd = workdir if workdir and os.path.isdir(workdir) else str(self._scratch_dir(runtime))
        limit = self._memory_limit(container)
        preexec: Callable[[], None] | None = None
        if limit is not None:

            def preexec() -> None:
                resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

        popen: subprocess.Popen[bytes] | None = None
        error: str | None = None
        if not argv:
            error = "no command specified"
        else:
            try:
                popen = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=cwd,
                    start_new_session=True,
                    preexec_fn=preexec,
                    close_fds=True,
                )
            except OSError as exc:
                reason = (
                    "executable file not found in $PATH"
                    if isinstance(exc, FileNotFoundError)
                    else exc.strerror or str(exc)
                )
                error = f'exec: "{argv[0]}": {reason}'
        with self.store.lock:
            container.runs.append(run)
            if popen is None:
                run.log.closed = True
                run.terminated = {
                    "exitCode": 128,
                    "reason": "StartError",
                    "message": (
                        "failed to create containerd task: failed to create shim task: OCI "
                        "runtime create failed: runc create failed: unable to start container "
                        f"process: {error}: unknown"
                    ),
                    "startedAt": "1970-01-01T00:00:00Z",
                    "finishedAt": rfc3339(now()),
                    "containerID": run.container_id,
                }
                self.logs_changed.notify_all()
                return run
            run.popen = popen
            info = ProcessInfo(
                namespace=runtime.namespace,
                pod=runtime.name,
                pod_uid=runtime.uid,
                container=container.name,
                job=runtime.job_name,
                pid=popen.pid,
                argv=argv,
                started_at=started,
            )
            run.process = info
            self._processes.append(info)
            container.state = {"running": {"startedAt": rfc3339(started)}}
            container.started = True
            container.ready = True
            if runtime.phase == "Pending":
                runtime.phase = "Running"
        self._publish(runtime)
        if runtime.terminating.is_set():
            # Deleted while starting: the kill sequence may have missed this process.
            run.killed_by_kubelet = True
            _signal_group(run, signal.SIGKILL)
        return run

    def _wait_container(
        self, runtime: PodRuntime, container: ContainerRuntime, run: ContainerRun
    ) -> None:
        popen = run.popen
        assert popen is not None and popen.stdout is not None and run.process is not None
        reader = threading.Thread(
            target=self._read_output,
            args=(popen.stdout.fileno(), run),
            name=f"log-{runtime.name}",
            daemon=True,
        )
        reader.start()
        returncode = popen.wait()
        # Container teardown: nothing in the "cgroup" outlives the main process.
        _signal_group(run, signal.SIGKILL)
        reader.join(timeout=2.0)
        popen.stdout.close()
        finished = now()
        exit_code = 128 - returncode if returncode < 0 else returncode
        reason = "Completed" if exit_code == 0 else "Error"
        with self.store.lock:
            run.log.closed = True
            tail = b"".join(piece.data for piece in run.log.pieces[-20:])[-4096:]
            if self._memory_limit(container) is not None and exit_code != 0:
                oom_signal = returncode == -signal.SIGKILL and not run.killed_by_kubelet
                if oom_signal or any(marker in tail for marker in _OOM_MARKERS):
                    exit_code, reason = 137, "OOMKilled"
            terminated: JSON = {
                "exitCode": exit_code,
                "reason": reason,
                "startedAt": rfc3339(run.started_at),
                "finishedAt": rfc3339(finished),
                "containerID": run.container_id,
            }
            policy = container.spec.get("terminationMessagePolicy", "File")
            if policy == "FallbackToLogsOnError" and exit_code != 0:
                lines = run.log.text().splitlines(keepends=True)[-80:]
                message = "".join(lines)[-2048:]
                if message:
                    terminated["message"] = message
            run.terminated = terminated
            run.process.returncode = returncode
            run.process.finished_at = finished
            self.logs_changed.notify_all()

    def _read_output(self, fd: int, run: ContainerRun) -> None:
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                break
            if not data:
                break
            with self.store.lock:
                run.log.append(now(), data)
                self.logs_changed.notify_all()

    def _final_phase(self, runtime: PodRuntime) -> str:
        codes = [container.exit_code() for container in runtime.containers]
        if codes and all(code == 0 for code in codes):
            return "Succeeded"
        if runtime.terminating.is_set() or any(code is not None for code in codes):
            return "Failed"
        return runtime.phase

    def _pod_status(self, runtime: PodRuntime) -> JSON:
        stamp = rfc3339(runtime.start_time)
        current = rfc3339(now())
        containers_done = bool(runtime.containers) and all(c.finished for c in runtime.containers)
        phase = runtime.phase
        if runtime.done.is_set() or containers_done:
            phase = self._final_phase(runtime)
        unready = [c.name for c in runtime.containers if not c.ready]
        conditions: list[JSON] = []

        def condition(type_: str, ok: bool, reason: str = "", message: str = "") -> None:
            value = "True" if ok else "False"
            previous = runtime.condition_times.get(type_)
            if previous is None or previous[0] != value:
                previous = (value, stamp if previous is None else current)
                runtime.condition_times[type_] = previous
            entry: JSON = {
                "type": type_,
                "status": value,
                "lastProbeTime": None,
                "lastTransitionTime": previous[1],
            }
            if reason:
                entry["reason"] = reason
            if message:
                entry["message"] = message
            conditions.append(entry)

        terminal_reason = {"Succeeded": "PodCompleted", "Failed": "PodFailed"}.get(phase, "")
        condition("PodReadyToStartContainers", runtime.sandbox_ready)
        condition("Initialized", True, "PodCompleted" if phase == "Succeeded" else "")
        not_ready_message = f"containers with unready status: [{' '.join(unready)}]"
        if unready:
            reason = terminal_reason or "ContainersNotReady"
            message = "" if terminal_reason else not_ready_message
            condition("Ready", False, reason, message)
            condition("ContainersReady", False, reason, message)
        else:
            condition("Ready", True)
            condition("ContainersReady", True)
        condition("PodScheduled", True)
        statuses: list[JSON] = []
        for container in runtime.containers:
            status: JSON = {
                "name": container.name,
                "state": container.state,
                "lastState": container.last_state,
                "ready": container.ready,
                "restartCount": container.restart_count,
                "image": container.image,
                "imageID": _image_id(container.image) if container.pulled else "",
                "started": container.started and "running" in container.state,
            }
            if container.runs:
                status["containerID"] = container.runs[-1].container_id
            statuses.append(status)
        status_obj: JSON = {
            "phase": phase,
            "conditions": conditions,
            "hostIP": self.config.host_ip,
            "hostIPs": [{"ip": self.config.host_ip}],
            "startTime": stamp,
            "containerStatuses": statuses,
            "qosClass": runtime.qos_class,
        }
        if runtime.sandbox_ready or runtime.done.is_set():
            status_obj["podIP"] = runtime.pod_ip
            status_obj["podIPs"] = [{"ip": runtime.pod_ip}]
        return status_obj


def _image_id(image: str) -> str:
    repository = image.split("@", 1)[0].rsplit(":", 1)[0]
    return f"{repository}@sha256:{hashlib.sha256(image.encode()).hexdigest()}"


def _signal_group(run: ContainerRun, sig: signal.Signals) -> None:
    process = run.process
    if process is None:
        return
    with contextlib.suppress(OSError):
        os.killpg(process.pid, sig)
