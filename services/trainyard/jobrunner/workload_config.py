"""What a caller may hand a workload as its configuration: the one definition of the rules.

A job spec carries the config inline (`config_json`: the local backend writes it to a file only
the workload reads, whose path it gets in TRAINYARD_CONFIG; the Kubernetes backend puts it in
a per-job Secret the container reads as TRAINYARD_CONFIG_JSON) or by reference (`config_uri`,
a `file://` or `s3://` URI passed as TRAINYARD_CONFIG_URI). The rules:

- at most one of the two, and only on a backend that delivers it (DELIVERING_BACKENDS);
- `config_json` is a JSON object of at most MAX_CONFIG_BYTES (UTF-8);
- `config_uri` is a `file:///absolute/path` or `s3://bucket/key` of at most MAX_URI_BYTES.
"""

from __future__ import annotations

import json

from trainyard.blobs import parse_blob_uri
from trainyard.runtime.errors import FieldViolation

#: The largest inline config: 1 MiB, also what a Kubernetes Secret may hold (its one key).
#: Bigger inputs belong in blob storage (config_uri).
MAX_CONFIG_BYTES = 1024 * 1024
#: The longest config URI.
MAX_URI_BYTES = 2048
#: The backends that deliver a config. Another one refuses a spec with a config rather than run
#: the workload without it.
DELIVERING_BACKENDS = frozenset({"local", "kubernetes"})


def config_violations(text: str, uri: str, backend: str) -> list[FieldViolation]:
    """Every rule a spec's config fields (`config_json` text, `config_uri`) break, named as
    `spec.config_json` and `spec.config_uri`."""
    problems: list[FieldViolation] = []
    if (text or uri) and backend not in DELIVERING_BACKENDS:
        field = "spec.config_json" if text else "spec.config_uri"
        problems.append(
            FieldViolation(field, f"the {backend} backend cannot hand a workload its config yet")
        )
    if text and uri:
        problems.append(
            FieldViolation("spec.config_json", "give config_json or config_uri, not both")
        )
    if text:
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > MAX_CONFIG_BYTES:
            problems.append(
                FieldViolation(
                    "spec.config_json",
                    f"is {size} bytes; at most {MAX_CONFIG_BYTES} (1 MiB) are allowed: "
                    "put a bigger config in blob storage and pass config_uri",
                )
            )
        else:
            try:
                parsed = json.loads(text)
            except ValueError as exc:
                problems.append(FieldViolation("spec.config_json", f"is not JSON: {exc}"))
            else:
                if not isinstance(parsed, dict):
                    problems.append(
                        FieldViolation("spec.config_json", "must be a JSON object ({...})")
                    )
    if uri:
        if len(uri.encode("utf-8", "surrogatepass")) > MAX_URI_BYTES:
            problems.append(
                FieldViolation("spec.config_uri", f"is longer than {MAX_URI_BYTES} bytes")
            )
        else:
            try:
                parsed = parse_blob_uri(uri)
            except ValueError as exc:
                parsed = None
                reason = str(exc)
            if parsed is None or (parsed.scheme == "s3" and not parsed.key):
                problems.append(
                    FieldViolation(
                        "spec.config_uri",
                        "must be a file:///absolute/path or s3://bucket/key URI"
                        + (f" ({reason})" if parsed is None else ""),
                    )
                )
    return problems
