"""spec domain form: jobs' specs stored as the job domain's JSON, not as proto-JSON

Until 0002 the spec column held the submitted JobSpec as proto-JSON (`"deadline": "90.5s"`,
`"memory_mb": "512"`, defaults left out), so the runner parsed proto-JSON to run a job. Now it
holds JobSpec.to_json (trainyard.jobrunner.domain): every field, `deadline_seconds` a number or
null. The conversion below is written out here, frozen, rather than imported from the domain,
so this migration means the same thing whatever the domain later becomes. spec_hash (what an
idempotent resubmission is compared with) is recomputed from the new form as the runner now
computes it.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BATCH = 500

jobs = sa.table(
    "jobrunner_jobs",
    sa.column("id", sa.String(36)),
    sa.column("spec", sa.JSON()),
    sa.column("spec_hash", sa.String(64)),
)


def _hash(spec: dict[str, Any]) -> str:
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _strings(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in (value or {}).items()}


def to_domain(old: dict[str, Any]) -> dict[str, Any]:
    """The 0003 form of a proto-JSON spec (a spec already in that form is returned as is)."""
    if "deadline_seconds" in old:
        return old
    resources = old.get("resources") or {}
    raw_deadline = old.get("deadline")
    return {
        "name": str(old.get("name") or ""),
        "image": str(old.get("image") or ""),
        "command": [str(c) for c in old.get("command") or []],
        "args": [str(a) for a in old.get("args") or []],
        "env": _strings(old.get("env")),
        "resources": {
            "cores": float(resources.get("cores") or 0.0),
            "memory_mb": int(resources.get("memory_mb") or 0),
        },
        # proto-JSON writes a Duration as decimal seconds with an "s" suffix.
        "deadline_seconds": float(str(raw_deadline).rstrip("s")) if raw_deadline else None,
        "retries": int(old.get("retries") or 0),
        "labels": _strings(old.get("labels")),
        "config_json": str(old.get("config_json") or ""),
        "config_uri": str(old.get("config_uri") or ""),
    }


def to_proto_json(new: dict[str, Any]) -> dict[str, Any]:
    """The 0002 form of a 0003 spec, defaults left out as proto-JSON leaves them out."""
    if "deadline_seconds" not in new:
        return new
    old: dict[str, Any] = {}
    for key in ("name", "image", "command", "args", "env", "labels", "config_json", "config_uri"):
        if new.get(key):
            old[key] = new[key]
    resources = new.get("resources") or {}
    if resources.get("cores"):
        old.setdefault("resources", {})["cores"] = float(resources["cores"])
    if resources.get("memory_mb"):
        old.setdefault("resources", {})["memory_mb"] = str(resources["memory_mb"])
    if new.get("deadline_seconds") is not None:
        old["deadline"] = f"{float(new['deadline_seconds']):g}s"
    if new.get("retries"):
        old["retries"] = int(new["retries"])
    return old


def _convert(convert: Any) -> None:
    bind = op.get_bind()
    last = ""
    while True:
        rows = bind.execute(
            sa.select(jobs.c.id, jobs.c.spec)
            .where(jobs.c.id > last)
            .order_by(jobs.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        for job_id, spec in rows:
            new = convert(dict(spec or {}))
            if new != spec:
                bind.execute(
                    jobs.update().where(jobs.c.id == job_id).values(spec=new, spec_hash=_hash(new))
                )
        last = rows[-1][0]


def upgrade() -> None:
    _convert(to_domain)


def downgrade() -> None:
    _convert(to_proto_json)
