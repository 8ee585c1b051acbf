"""A Kubernetes API server test double for job runners.

``FakeKubernetes`` serves the Kubernetes JSON REST API on 127.0.0.1 (an
ephemeral port) for the subset a job runner uses, so the official
``kubernetes`` Python client works against it unmodified::

    with FakeKubernetes(known_images=["python:3.11"]) as k8s:
        batch = kubernetes.client.BatchV1Api(k8s.api_client())
        batch.create_namespaced_job("default", job)

Each Job gets pods named ``{job}-{5 chars}`` (apimachinery's generated-name
alphabet, lowercase consonants and digits) whose containers run as real local
subprocesses: ``command + args`` with ``$(VAR)`` expansion, the container's
``env`` (value, fieldRef, resourceFieldRef, secretKeyRef from the API's Secrets,
configMapKeyRef from data registered with ``add_config_map``, and envFrom) over a
minimal environment (PATH, HOSTNAME, HOME = a per-pod scratch directory,
KUBERNETES_SERVICE_HOST/PORT pointing at the double). stdout and stderr share
one pipe, so the pod log keeps their interleaving exactly.

Served paths (any namespace name; namespaces need not be created):

* ``/apis/batch/v1/namespaces/{ns}/jobs``: POST (create, ``dryRun``), GET (list,
  with labelSelector, fieldSelector, limit/continue, and ``watch=true`` with
  resourceVersion, timeoutSeconds, sendInitialEvents), DELETE (deletecollection).
* ``/apis/batch/v1/namespaces/{ns}/jobs/{name}`` GET / DELETE, ``.../status`` GET,
  ``/apis/batch/v1/jobs`` (all namespaces, list/watch).
* ``/api/v1/namespaces/{ns}/pods`` GET (list/watch), ``/api/v1/pods``,
  ``/api/v1/namespaces/{ns}/pods/{name}`` GET / DELETE, ``.../status`` GET,
  ``.../log`` GET (container, follow, tailLines, timestamps, sinceSeconds,
  sinceTime, limitBytes, previous).
* ``/api/v1/namespaces/{ns}/secrets`` POST (create, ``dryRun``), GET (list/watch,
  labelSelector, fieldSelector), ``/api/v1/secrets``, ``.../secrets/{name}`` GET,
  PATCH (``application/merge-patch+json`` only), DELETE (uid preconditions).
* ``/version``, ``/healthz``, ``/livez``, ``/readyz``.

Anything else gets the API server's 404 ``the server could not find the
requested resource``; PUT/PATCH/POST on other served paths get 405.

Behaviour copied from a real (1.31+) cluster:

* Status errors: 404 NotFound (``jobs.batch "x" not found``), 409
  AlreadyExists, 422 Invalid with causes (restartPolicy, containers, name, ...),
  400 BadRequest for bad selectors/quantities/namespace mismatch, and for
  logs of a container that has not started (``... is waiting to start:
  trying and failing to pull image``). JSON bodies end in a newline.
* One cluster-wide resourceVersion (starting at 1000) bumped by every write;
  uid, generation, creationTimestamp; Job defaulting (backoffLimit 6,
  parallelism/completions 1, completionMode, podReplacementPolicy, selector on
  ``batch.kubernetes.io/controller-uid``, the four job labels on the template
  and, if the job has none, on the job); container defaults (imagePullPolicy,
  terminationMessagePath/Policy, resources {}).
* Job status as the 1.31+ controller writes it: startTime, active, ready,
  terminating, succeeded, failed, uncountedTerminatedPods; SuccessCriteriaMet
  then Complete (reason CompletionsReached) with completionTime; FailureTarget
  then Failed (BackoffLimitExceeded after backoffLimit+1 failed pods for
  restartPolicy Never, or restartCount >= backoffLimit for OnFailure;
  DeadlineExceeded after activeDeadlineSeconds). The terminal condition is only
  added once no pod of the job is still running; active pods are deleted.
* Secrets: ``stringData`` merged into ``data`` (base64) on every write and never
  returned; type defaults to Opaque; 400 for data that is not base64 (``illegal
  base64 data at input byte N``), 422 for bad names, keys, ownerReferences, more
  than 1 MiB of data, or a change to an ``immutable`` Secret's data; 404/409
  (``secrets "x" not found`` / ``already exists``, precondition Conflict); delete
  answers a Success Status. ``add_secret`` creates one as if applied.
* Garbage collection of Secrets owned (ownerReferences) by Jobs: deleted in the
  background once no owning Job exists; a Job deleted with Orphan strips the
  reference, Foreground deletes them first.
* secretKeyRef / envFrom.secretRef read the Secret when the pod starts: a missing
  Secret or key keeps the containers waiting with ``CreateContainerConfigError``
  (``secret "x" not found``, ``couldn't find key k in Secret ns/x``), retried
  until it appears (as the kubelet's pod sync does); ``optional: true`` skips it.
* Pods: ownerReferences (controller, blockOwnerDeletion), the
  ``batch.kubernetes.io/job-tracking`` finalizer (removed once counted), phase
  Pending/Running/Succeeded/Failed, conditions (PodReadyToStartContainers,
  Initialized, Ready, ContainersReady, PodScheduled), containerStatuses with
  waiting (ContainerCreating, ErrImagePull -> ImagePullBackOff,
  CreateContainerConfigError, CrashLoopBackOff), running, terminated
  (exitCode, reason Completed/Error/OOMKilled/StartError, startedAt,
  finishedAt, containerID; exit code 128+N for signal N), lastState and
  restartCount for OnFailure restarts; FallbackToLogsOnError messages.
* Deletion: batch/v1's default propagation is Orphan, with the API server's
  ``Warning: 299`` header; Orphan and Foreground answer 200 with the Job
  (deletionTimestamp, finalizers ``orphan``/``foregroundDeletion``) and finish
  asynchronously; Background answers a Success Status
  ``{"details": {"name", "group": "batch", "kind": "jobs", "uid"}}``.
  Deleting a pod sets deletionTimestamp, SIGTERMs the container's process
  group, SIGKILLs it after the grace period, records the terminal phase, then
  removes the pod. ttlSecondsAfterFinished deletes finished jobs (Foreground).
* Watch: newline-delimited ``{"type", "object"}`` JSON in a chunked
  response; ADDED for existing objects when no resourceVersion (or "0") is
  given; resuming from any retained resourceVersion; 410 Expired ERROR event
  for compacted ones; selector transitions turn into ADDED/DELETED like the
  watch cache; timeoutSeconds ends the stream.

Simplified or missing (by design):

* No authentication/authorization, no TLS, no Namespace objects, no
  admission, no managedFields, no PUT, PATCH for Secrets only and only as a merge
  patch (strategic merge / JSON patch get 415), no ConfigMap endpoints, Secrets are
  not mounted as volumes and not refreshed into a running container,
  no BOOKMARK events except the sendInitialEvents end marker, continue tokens
  page over current state rather than a snapshot.
* One node; no scheduling constraints; CPU limits are ignored; init
  containers, probes, volumes, completionMode Indexed, podFailurePolicy and
  suspend/resume (suspend=true at creation only) are not modelled.
* Memory limits are best effort: ``resources.limits.memory`` becomes
  RLIMIT_AS on the process (preexec_fn). A non-zero exit whose last output
  mentions MemoryError / "Cannot allocate memory" / bad_alloc, or a SIGKILL the
  kubelet did not send, is reported as exitCode 137, reason OOMKilled.
* The grace period before SIGKILL is capped (termination_grace_seconds,
  1 s by default); pod retry back-off (real: 10 s doubling) defaults to 0.
  The image "pull" is instant for known images and never succeeds for others.
* Processes run on this host as this user: the image only selects an ENTRYPOINT
  (``known_images`` mapping) when a container has args but no command.
* Log lines are timestamped when read from the pipe; stdout/stderr are not
  distinguished.

Note for client code: ``kubernetes==36.0.3`` returns ``read_namespaced_pod_log``
text as the repr of bytes (kubernetes-client/python#2596, client-side, same
against a real cluster); read logs with ``_preload_content=False``.
"""

from .fake import FakeKubernetes
from .kubelet import ProcessInfo
from .server import RecordedRequest

__all__ = ["FakeKubernetes", "ProcessInfo", "RecordedRequest"]
