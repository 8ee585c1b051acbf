"""Resource semantics of kube-apiserver for jobs and pods: defaulting,
validation, create/get/list/delete with finalizers and propagation policies."""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._util import (
    DNS1123_SUBDOMAIN,
    DNS1123_SUBDOMAIN_MESSAGE,
    JSON,
    deep_copy,
    generate_name,
    new_uid,
    now,
    parse_quantity,
    rfc3339,
)
from .errors import (
    ApiError,
    Cause,
    already_exists,
    bad_request,
    invalid,
    not_found,
    qualified,
    status_object,
)
from .kubelet import PODS, SECRETS, Kubelet, qos_class
from .selectors import (
    fields_match,
    labels_match,
    parse_field_selector,
    parse_label_selector,
)
from .store import Store

JOBS = "jobs"
BATCH = "batch"
JOB_TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"
ORPHAN_FINALIZER = "orphan"
FOREGROUND_FINALIZER = "foregroundDeletion"
DELETE_WARNING = (
    "child pods are preserved by default when jobs are deleted; set "
    "propagationPolicy=Background to remove them or set propagationPolicy=Orphan to "
    "suppress this warning"
)
QUANTITY_REGEX = "^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"

# resource -> (group, apiVersion, Kind, ListKind)
RESOURCES: dict[str, tuple[str, str, str, str]] = {
    JOBS: (BATCH, "batch/v1", "Job", "JobList"),
    PODS: ("", "v1", "Pod", "PodList"),
    SECRETS: ("", "v1", "Secret", "SecretList"),
}
MAX_SECRET_BYTES = 1024 * 1024  # corev1.MaxSecretSize, over all of data's values
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_CONFIG_KEY_MESSAGE = (
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. "
    "'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is "
    "'[-._a-zA-Z0-9]+')"
)
_BASE64 = re.compile(r"[A-Za-z0-9+/=]")
MERGE_PATCH = "application/merge-patch+json"


@dataclass
class DeleteOutcome:
    code: int
    body: JSON
    warnings: list[str] = field(default_factory=list)


@dataclass
class ListPage:
    items: list[JSON]
    resource_version: int
    continue_token: str | None = None
    remaining: int | None = None


class Cluster:
    """The API-server side: objects live in the Store, pods run in the Kubelet."""

    def __init__(self, store: Store, kubelet: Kubelet) -> None:
        self.store = store
        self.kubelet = kubelet

    # -- generic reads -------------------------------------------------------------

    def get(self, resource: str, namespace: str, name: str) -> JSON:
        obj = self.store.get(resource, namespace, name)
        if obj is None:
            raise not_found(resource, RESOURCES[resource][0], name)
        return obj

    def list(
        self,
        resource: str,
        namespace: str | None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> ListPage:
        predicate = self.predicate(resource, label_selector, field_selector)
        items, revision = self.store.list(resource, namespace, predicate)
        start_after: tuple[str, str] | None = None
        if continue_token:
            try:
                decoded = json.loads(base64.urlsafe_b64decode(continue_token.encode()))
                start_after = (decoded["start"][0], decoded["start"][1])
                revision = int(decoded["rv"])
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                raise bad_request("continue key is not valid: incorrect encoded start") from exc
            items = [
                item
                for item in items
                if (item["metadata"]["namespace"], item["metadata"]["name"]) > start_after
            ]
        if limit and limit > 0 and len(items) > limit:
            page = items[:limit]
            last = page[-1]["metadata"]
            token = base64.urlsafe_b64encode(
                json.dumps(
                    {
                        "v": "meta.k8s.io/v1",
                        "rv": revision,
                        "start": [last["namespace"], last["name"]],
                    }
                ).encode()
            ).decode()
            return ListPage(page, revision, token, len(items) - limit)
        return ListPage(items, revision)

    def list_object(self, resource: str, page: ListPage) -> JSON:
        _group, api_version, _kind, list_kind = RESOURCES[resource]
        metadata: JSON = {"resourceVersion": str(page.resource_version)}
        if page.continue_token:
            metadata["continue"] = page.continue_token
            metadata["remainingItemCount"] = page.remaining
        items = []
        for item in page.items:
            # Items in a list carry no kind/apiVersion (the list has them).
            entry = {k: v for k, v in item.items() if k not in ("kind", "apiVersion")}
            items.append(entry)
        return {"kind": list_kind, "apiVersion": api_version, "metadata": metadata, "items": items}

    def predicate(
        self, resource: str, label_selector: str | None, field_selector: str | None
    ) -> Callable[[JSON], bool]:
        labels = parse_label_selector(label_selector)
        fields = parse_field_selector(field_selector, resource)

        def matches(obj: JSON) -> bool:
            return labels_match(labels, obj["metadata"].get("labels")) and fields_match(
                fields, obj, resource
            )

        return matches

    # -- jobs ------------------------------------------------------------------------

    def create_job(self, namespace: str, body: Any, *, dry_run: bool = False) -> JSON:
        """POST .../jobs: validate, default, store (dry_run: validate and default only)."""
        job = _decoded(body, "batch/v1", "Job", namespace)
        meta = job["metadata"]
        _check_quantities(job)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = generate_name(str(meta["generateName"]))
        name = str(meta.get("name") or "")
        causes = _validate_job(job)
        if causes:
            raise invalid("Job", BATCH, name, causes)
        with self.store.lock:
            if self.store.exists(JOBS, namespace, name):
                raise already_exists(JOBS, BATCH, name)
            uid = new_uid()
            _default_job(job, namespace, uid)
            if dry_run:
                return job
            return self.store.create(JOBS, job)

    def delete_job(self, namespace: str, name: str, options: JSON) -> DeleteOutcome:
        warnings: list[str] = []
        policy = options.get("propagationPolicy")
        orphan_dependents = options.get("orphanDependents")
        if policy is not None and orphan_dependents is not None:
            raise invalid(
                "DeleteOptions",
                "",
                "",
                [
                    Cause(
                        "propagationPolicy",
                        "FieldValueInvalid",
                        'Invalid value: "' + str(policy) + '": orphanDependents and '
                        "deletionPropagation cannot be both set",
                    )
                ],
            )
        if policy is None and orphan_dependents is not None:
            policy = "Orphan" if orphan_dependents else "Background"
        if policy is None:
            warnings.append(DELETE_WARNING)
            policy = "Orphan"  # batch/v1's DefaultGarbageCollectionPolicy
        if policy not in ("Orphan", "Background", "Foreground"):
            raise invalid(
                "DeleteOptions",
                "",
                "",
                [
                    Cause(
                        "propagationPolicy",
                        "FieldValueNotSupported",
                        f'Unsupported value: "{policy}": supported values: "Foreground", '
                        '"Background", "Orphan", "nil"',
                    )
                ],
            )
        with self.store.lock:
            job = self.get(JOBS, namespace, name)
            uid = job["metadata"]["uid"]
            _check_uid_precondition(options, JOBS, BATCH, name, uid)
            finalizers = list(job["metadata"].get("finalizers") or [])
            extra = {"Orphan": ORPHAN_FINALIZER, "Foreground": FOREGROUND_FINALIZER}.get(policy)
            if extra and extra not in finalizers:
                finalizers.append(extra)
            if finalizers:
                stamp = rfc3339(now())

                def mark(obj: JSON) -> None:
                    obj["metadata"]["finalizers"] = finalizers
                    obj["metadata"].setdefault("deletionTimestamp", stamp)
                    obj["metadata"].setdefault("deletionGracePeriodSeconds", 0)

                updated = self.store.update(JOBS, namespace, name, mark) or job
                self.store.poke()
                code = 202 if orphan_dependents is False else 200
                return DeleteOutcome(code, updated, warnings)
            self.store.delete(JOBS, namespace, name)
            self.collect_dependents(uid)
            details = {"name": name, "group": BATCH, "kind": JOBS, "uid": uid}
            body = status_object(code=0, reason="", message="", details=details, success=True)
            del body["code"]
            return DeleteOutcome(200, body, warnings)

    def delete_jobs(
        self, namespace: str, options: JSON, predicate: Callable[[JSON], bool]
    ) -> DeleteOutcome:
        warnings: list[str] = []
        deleted: list[JSON] = []
        with self.store.lock:
            items, _ = self.store.list(JOBS, namespace, predicate)
            for item in items:
                outcome = self.delete_job(namespace, item["metadata"]["name"], options)
                warnings = outcome.warnings or warnings
                deleted.append(outcome.body if outcome.body.get("kind") != "Status" else item)
            revision = self.store.revision
        body = self.list_object(JOBS, ListPage(deleted, revision))
        return DeleteOutcome(200, body, warnings)

    def collect_dependents(self, owner_uid: str) -> None:
        """Background garbage collection: delete pods whose owner is gone."""
        with self.store.lock:
            pods, _ = self.store.list(PODS)
            for pod in pods:
                meta = pod["metadata"]
                owners = [ref.get("uid") for ref in meta.get("ownerReferences") or []]
                if owner_uid in owners and meta.get("deletionTimestamp") is None:
                    self.kubelet.delete_pod(meta["namespace"], meta["name"])

    # -- secrets ---------------------------------------------------------------------------

    def create_secret(self, namespace: str, body: Any, *, dry_run: bool = False) -> JSON:
        """POST .../secrets: stringData merged into data (base64), as the API server's
        conversion does, then validated; data is returned base64, stringData never."""
        secret = _decoded(body, "v1", "Secret", namespace)
        meta = secret["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = generate_name(str(meta["generateName"]))
        name = str(meta.get("name") or "")
        _merge_string_data(secret)
        secret.setdefault("type", "Opaque")
        causes = _validate_secret(secret)
        if causes:
            raise invalid("Secret", "", name, causes)
        with self.store.lock:
            if self.store.exists(SECRETS, namespace, name):
                raise already_exists(SECRETS, "", name)
            meta["namespace"] = namespace
            meta["uid"] = new_uid()
            meta["creationTimestamp"] = rfc3339(now())
            for key in ("resourceVersion", "deletionTimestamp", "managedFields", "generation"):
                meta.pop(key, None)
            secret["apiVersion"] = "v1"
            secret["kind"] = "Secret"
            if dry_run:
                return secret
            return self.store.create(SECRETS, secret)

    def patch_secret(self, namespace: str, name: str, content_type: str, patch: Any) -> JSON:
        """PATCH .../secrets/{name} with a JSON merge patch (RFC 7386). metadata.resourceVersion
        in the patch is a precondition; an immutable Secret's data and type stay as they are."""
        if content_type.split(";", 1)[0].strip().lower() != MERGE_PATCH:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types "
                f"include: {MERGE_PATCH} (the double models merge patches only)",
            )
        if not isinstance(patch, dict):
            raise bad_request(
                "json: cannot unmarshal array into Go value of type map[string]interface {}"
            )
        with self.store.lock:
            current = self.get(SECRETS, namespace, name)
            meta = current["metadata"]
            patch_meta = patch.get("metadata")
            patch_meta = patch_meta if isinstance(patch_meta, dict) else {}
            wanted_version = patch_meta.get("resourceVersion")
            if wanted_version not in (None, meta["resourceVersion"]):
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on secrets "{name}": the object has been '
                    "modified; please apply your changes to the latest version and try again",
                    {"name": name, "kind": SECRETS},
                )
            updated = _merge_patch(deep_copy(current), patch)
            if not isinstance(updated.get("metadata"), dict):
                raise bad_request("metadata must be an object")
            new_meta = updated["metadata"]
            if new_meta.get("name") != name or new_meta.get("namespace") != namespace:
                raise bad_request(
                    f"the name of the object ({new_meta.get('name')}) does not match the name "
                    f"on the URL ({name})"
                )
            _merge_string_data(updated)
            causes = _validate_secret(updated)
            if new_meta.get("uid") != meta["uid"]:
                causes.append(
                    Cause(
                        "metadata.uid",
                        "FieldValueInvalid",
                        f'Invalid value: "{new_meta.get("uid")}": field is immutable',
                    )
                )
            if current.get("immutable"):
                for key in ("data", "immutable", "type"):
                    if updated.get(key) != current.get(key):
                        causes.append(
                            Cause(
                                key,
                                "FieldValueForbidden",
                                "Forbidden: field is immutable when `immutable` is set",
                            )
                        )
            if causes:
                raise invalid("Secret", "", name, causes)
            new_meta["resourceVersion"] = meta["resourceVersion"]  # the store bumps it

            def replace(obj: JSON) -> None:
                obj.clear()
                obj.update(updated)

            stored = self.store.update(SECRETS, namespace, name, replace)
            if stored is None:
                raise not_found(SECRETS, "", name)
            return stored

    def delete_secret(self, namespace: str, name: str, options: JSON) -> DeleteOutcome:
        """DELETE .../secrets/{name}: gone at once (Secrets have no finalizers of their own);
        the answer is a Success Status, as for every resource that does not return the
        deleted object."""
        with self.store.lock:
            secret = self.get(SECRETS, namespace, name)
            uid = secret["metadata"]["uid"]
            _check_uid_precondition(options, SECRETS, "", name, uid)
            self.store.delete(SECRETS, namespace, name)
        details = {"name": name, "kind": SECRETS, "uid": uid}
        body = status_object(code=0, reason="", message="", details=details, success=True)
        del body["code"]
        return DeleteOutcome(200, body)

    # -- pods ----------------------------------------------------------------------------

    def create_pod_for_job(self, job: JSON) -> JSON:
        """What the job controller does: a pod from the template, owned by the job."""
        meta = job["metadata"]
        template = deep_copy(job["spec"]["template"])
        template_meta = template.get("metadata") or {}
        spec = template["spec"]
        spec.setdefault("serviceAccountName", "default")
        spec.setdefault("serviceAccount", spec["serviceAccountName"])
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
        spec.setdefault("priority", 0)
        spec.setdefault(
            "tolerations",
            [
                {
                    "key": "node.kubernetes.io/not-ready",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                },
                {
                    "key": "node.kubernetes.io/unreachable",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                },
            ],
        )
        with self.store.lock:
            while True:
                name = generate_name(f"{meta['name']}-")
                if not self.store.exists(PODS, meta["namespace"], name):
                    break
            pod_meta: JSON = {
                "name": name,
                "generateName": f"{meta['name']}-",
                "namespace": meta["namespace"],
                "uid": new_uid(),
                "creationTimestamp": rfc3339(now()),
                "labels": dict(template_meta.get("labels") or {}),
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
                "finalizers": [JOB_TRACKING_FINALIZER],
            }
            if template_meta.get("annotations"):
                pod_meta["annotations"] = dict(template_meta["annotations"])
            pod = {
                "kind": "Pod",
                "apiVersion": "v1",
                "metadata": pod_meta,
                "spec": spec,
                "status": {"phase": "Pending", "qosClass": qos_class(spec.get("containers", []))},
            }
            created = self.store.create(PODS, pod)
            self.kubelet.start_pod(created)
            return created

    def delete_pod(self, namespace: str, name: str, options: JSON) -> JSON:
        grace = options.get("gracePeriodSeconds")
        with self.store.lock:
            self.get(PODS, namespace, name)
            result = self.kubelet.delete_pod(
                namespace, name, None if grace is None else max(0, int(grace))
            )
            if result is None:
                raise not_found(PODS, "", name)
            return result


def _decoded(body: Any, api_version: str, kind: str, namespace: str) -> JSON:
    """A copy of a create request's object, refused as the API server's decoder refuses a
    wrong apiVersion, kind or namespace."""
    version = api_version.rsplit("/", 1)[-1]
    if not isinstance(body, dict):
        raise bad_request(
            f'{kind} in version "{version}" cannot be handled as a {kind}: expected object'
        )
    sent_version = body.get("apiVersion")
    sent_kind = body.get("kind")
    if sent_version not in (None, "", api_version):
        raise bad_request(
            f"the API version in the data ({sent_version}) does not match the expected "
            f"API version ({api_version})"
        )
    if sent_kind not in (None, "", kind):
        raise bad_request(
            f'{sent_kind} in version "{version}" cannot be handled as a {kind}: the object '
            "provided is unrecognized"
        )
    obj = deep_copy(body)
    meta = obj.get("metadata") or {}
    if not isinstance(meta, dict):
        raise bad_request(
            f'{kind} in version "{version}" cannot be handled as a {kind}: metadata must be '
            "an object"
        )
    obj["metadata"] = meta
    if meta.get("namespace") not in (None, "", namespace):
        raise bad_request(
            "the namespace of the provided object does not match the namespace sent on the request"
        )
    return obj


def _check_uid_precondition(options: JSON, resource: str, group: str, name: str, uid: str) -> None:
    preconditions = options.get("preconditions") or {}
    if preconditions.get("uid") not in (None, uid):
        details: JSON = {"name": name, "group": group, "kind": resource}
        if not group:
            del details["group"]
        raise ApiError(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {qualified(resource, group)} "{name}": '
            f"Precondition failed: UID in precondition: {preconditions['uid']}, UID in object "
            f"meta: {uid}",
            details,
        )


def _base64_error(value: Any) -> str | None:
    """Go's encoding/base64 complaint about a data value, or None if it decodes."""
    if not isinstance(value, str):
        return "illegal base64 data at input byte 0"
    for index, char in enumerate(value):
        if not _BASE64.match(char):
            return f"illegal base64 data at input byte {index}"
    try:
        base64.b64decode(value, validate=True)
    except binascii.Error:
        return f"illegal base64 data at input byte {len(value) - len(value) % 4}"
    return None


def _merge_string_data(secret: JSON) -> None:
    """Fold write-only stringData into data, base64-encoded (its keys win, as in the API
    server's conversion); a data value that is not base64 is refused like its decoder does."""
    data = secret.get("data")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise bad_request(
            'Secret in version "v1" cannot be handled as a Secret: data must be an object'
        )
    for value in data.values():
        problem = _base64_error(value)
        if problem:
            raise bad_request(f'Secret in version "v1" cannot be handled as a Secret: {problem}')
    string_data = secret.pop("stringData", None) or {}
    if not isinstance(string_data, dict) or not all(
        isinstance(v, str) for v in string_data.values()
    ):
        raise bad_request(
            'Secret in version "v1" cannot be handled as a Secret: stringData values must be '
            "strings"
        )
    for key, value in string_data.items():
        data[key] = base64.b64encode(value.encode("utf-8", "surrogateescape")).decode()
    if data:
        secret["data"] = data
    else:
        secret.pop("data", None)


def _validate_secret(secret: JSON) -> list[Cause]:
    causes = _validate_name(secret["metadata"].get("name"), limit=253)
    total = 0
    for key, value in sorted((secret.get("data") or {}).items()):
        if not _CONFIG_KEY.match(key) or len(key) > 253:
            causes.append(
                Cause(
                    f"data[{key}]",
                    "FieldValueInvalid",
                    f'Invalid value: "{key}": {_CONFIG_KEY_MESSAGE}',
                )
            )
        total += len(base64.b64decode(value))
    if total > MAX_SECRET_BYTES:
        causes.append(
            Cause(
                "data",
                "FieldValueTooLong",
                f"Too long: may not be more than {MAX_SECRET_BYTES} bytes",
            )
        )
    causes.extend(_validate_owner_references(secret["metadata"].get("ownerReferences")))
    return causes


def _validate_name(name: Any, limit: int) -> list[Cause]:
    if not name:
        return [
            Cause(
                "metadata.name",
                "FieldValueRequired",
                "Required value: name or generateName is required",
            )
        ]
    if not isinstance(name, str) or not DNS1123_SUBDOMAIN.match(name) or len(name) > 253:
        return [
            Cause(
                "metadata.name",
                "FieldValueInvalid",
                f'Invalid value: "{name}": {DNS1123_SUBDOMAIN_MESSAGE}',
            )
        ]
    if len(name) > limit:
        return [
            Cause(
                "metadata.name",
                "FieldValueInvalid",
                f'Invalid value: "{name}": must be no more than {limit} characters',
            )
        ]
    return []


def _validate_owner_references(refs: Any) -> list[Cause]:
    """apimachinery's ValidateOwnerReferences: each names apiVersion, kind, name and uid."""
    if refs is None:
        return []
    if not isinstance(refs, list):
        return [
            Cause("metadata.ownerReferences", "FieldValueInvalid", "Invalid value: must be a list")
        ]
    causes: list[Cause] = []
    for ref in refs:
        ref = ref if isinstance(ref, dict) else {}
        for key, what in (
            ("apiVersion", "version"),
            ("kind", "kind"),
            ("name", "name"),
            ("uid", "uid"),
        ):
            if not ref.get(key):
                causes.append(
                    Cause(
                        f"metadata.ownerReferences.{key}",
                        "FieldValueInvalid",
                        f'Invalid value: "": {what} must not be empty',
                    )
                )
    return causes


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge, null removes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _check_quantities(job: JSON) -> None:
    spec = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
    for container in spec.get("containers") or []:
        if not isinstance(container, dict):
            continue
        resources = container.get("resources") or {}
        for section in ("limits", "requests"):
            for value in (resources.get(section) or {}).values():
                try:
                    parse_quantity(value)
                except (ValueError, TypeError) as exc:
                    raise bad_request(
                        'Job in version "v1" cannot be handled as a Job: quantities must match '
                        f"the regular expression '{QUANTITY_REGEX}'"
                    ) from exc


def _nonnegative(value: Any, path: str, causes: list[Cause]) -> None:
    if value is not None and (not isinstance(value, int) or value < 0):
        causes.append(
            Cause(
                path,
                "FieldValueInvalid",
                f"Invalid value: {value}: must be greater than or equal to 0",
            )
        )


def _validate_job(job: JSON) -> list[Cause]:
    causes = _validate_name(job["metadata"].get("name"), limit=63)
    spec = job.get("spec")
    if not isinstance(spec, dict):
        causes.append(
            Cause("spec.template.spec.containers", "FieldValueRequired", "Required value")
        )
        return causes
    for key in (
        "parallelism",
        "completions",
        "backoffLimit",
        "activeDeadlineSeconds",
        "ttlSecondsAfterFinished",
    ):
        _nonnegative(spec.get(key), f"spec.{key}", causes)
    template = spec.get("template") or {}
    pod_spec = template.get("spec") or {}
    containers = pod_spec.get("containers") or []
    if not containers:
        causes.append(
            Cause("spec.template.spec.containers", "FieldValueRequired", "Required value")
        )
    seen: set[str] = set()
    for index, container in enumerate(containers):
        path = f"spec.template.spec.containers[{index}]"
        if not isinstance(container, dict):
            causes.append(Cause(path, "FieldValueInvalid", "Invalid value: must be an object"))
            continue
        cname = container.get("name")
        if not cname:
            causes.append(Cause(f"{path}.name", "FieldValueRequired", "Required value"))
        elif cname in seen:
            causes.append(
                Cause(f"{path}.name", "FieldValueDuplicate", f'Duplicate value: "{cname}"')
            )
        else:
            seen.add(str(cname))
        if not container.get("image"):
            causes.append(Cause(f"{path}.image", "FieldValueRequired", "Required value"))
    policy = pod_spec.get("restartPolicy")
    if policy in (None, "", "Always"):
        causes.append(
            Cause(
                "spec.template.spec.restartPolicy",
                "FieldValueRequired",
                'Required value: valid values: "OnFailure", "Never"',
            )
        )
    elif policy not in ("OnFailure", "Never"):
        causes.append(
            Cause(
                "spec.template.spec.restartPolicy",
                "FieldValueNotSupported",
                f'Unsupported value: "{policy}": supported values: "OnFailure", "Never"',
            )
        )
    if spec.get("manualSelector") and not spec.get("selector"):
        causes.append(Cause("spec.selector", "FieldValueRequired", "Required value"))
    return causes


def _default_job(job: JSON, namespace: str, uid: str) -> None:
    meta = job["metadata"]
    name = meta["name"]
    meta["namespace"] = namespace
    meta["uid"] = uid
    meta["generation"] = 1
    meta["creationTimestamp"] = rfc3339(now())
    for key in (
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
    ):
        meta.pop(key, None)
    job["apiVersion"] = "batch/v1"
    job["kind"] = "Job"
    spec = job["spec"]
    if spec.get("parallelism") is None:
        spec["parallelism"] = 1
        if spec.get("completions") is None:
            spec["completions"] = 1
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    if not spec.get("podFailurePolicy"):
        spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    template = spec["template"]
    template_meta = template.setdefault("metadata", {}) or {}
    template["metadata"] = template_meta
    if not spec.get("manualSelector"):
        spec["manualSelector"] = False
        generated = {
            "batch.kubernetes.io/controller-uid": uid,
            "batch.kubernetes.io/job-name": name,
            "controller-uid": uid,
            "job-name": name,
        }
        labels = dict(template_meta.get("labels") or {})
        labels.update(generated)
        template_meta["labels"] = labels
        spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    if not meta.get("labels"):
        meta["labels"] = dict(template_meta.get("labels") or {})
    pod_spec = template["spec"]
    pod_spec.setdefault("dnsPolicy", "ClusterFirst")
    pod_spec.setdefault("schedulerName", "default-scheduler")
    pod_spec.setdefault("securityContext", {})
    pod_spec.setdefault("terminationGracePeriodSeconds", 30)
    for container in pod_spec["containers"]:
        image = str(container["image"])
        last = image.split("@", 1)[0].rsplit("/", 1)[-1]
        tagged_latest = ":" not in last or last.endswith(":latest")
        pull = "Always" if tagged_latest and "@" not in image else "IfNotPresent"
        container.setdefault("imagePullPolicy", pull)
        container.setdefault("resources", {})
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        for port in container.get("ports") or []:
            port.setdefault("protocol", "TCP")
        for env in container.get("env") or []:
            field_ref = (env.get("valueFrom") or {}).get("fieldRef")
            if field_ref:
                field_ref.setdefault("apiVersion", "v1")
    job["status"] = {}
