"""The finetuning API through the real Envoy, as the document reads: database connections,
golden records and finetunings, with every error of the issue and its text, owner-only access,
and the connection's password in no answer."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from tests.finetuning.support import MODEL, Finetuning, company_sqlite, golden, start_finetuning
from tests.support import nl2sql
from tests.support.openai_server import OpenAIServer

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}$")
DOCUMENTED_KEYS = {
    "id",
    "alias",
    "db_connection_id",
    "status",
    "error",
    "base_llm",
    "finetuning_file_id",
    "finetuning_job_id",
    "model_id",
    "created_at",
    "golden_records",
    "metadata",
}
PAIRS = nl2sql.TRAIN + nl2sql.EVAL


@pytest.fixture(scope="module")
def ft(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Finetuning]:
    # The provider's jobs take long here: the tests below look at finetunings while they run.
    with OpenAIServer() as server:
        platform = start_finetuning(tmp_path_factory.mktemp("ft-api"), server)
        platform.provider.step_seconds = 30.0
        try:
            yield platform
        finally:
            platform.close()


@pytest.fixture(scope="module")
def conn(ft: Finetuning) -> dict[str, Any]:
    return ft.connection()


@pytest.fixture(scope="module")
def records(ft: Finetuning, conn: dict[str, Any]) -> list[dict[str, Any]]:
    return ft.golden_records(conn["id"], PAIRS)


def error_of(resp: Any) -> str:
    message: str = resp.json()["message"]
    return message


# ---- database connections -------------------------------------------------------------------


def test_a_connection_answers_its_fields(ft: Finetuning, conn: dict[str, Any]) -> None:
    assert set(conn) == {
        "id",
        "alias",
        "dialect",
        "connection_uri",
        "schemas",
        "metadata",
        "created_at",
    }
    assert conn["alias"] == "company" and conn["dialect"] == "sqlite"
    assert ISO.match(conn["created_at"])
    got = ft.call("GET", f"/database-connections/{conn['id']}")
    assert got.status_code == 200 and got.json() == conn
    listed = ft.call("GET", "/database-connections")
    assert listed.status_code == 200 and conn in listed.json()


def test_a_password_is_masked_and_never_answered(ft: Finetuning, postgres_url: str) -> None:
    # Trust authentication on these machines: any password connects, so it can be looked for.
    url = make_url(postgres_url).set(drivername="postgresql", password="s3cr3t-Pa55")
    uri = url.render_as_string(hide_password=False)
    created = ft.connection(uri, alias="warehouse", metadata={"team": "bi"})
    assert created["dialect"] == "postgresql" and created["metadata"] == {"team": "bi"}
    assert "s3cr3t-Pa55" not in created["connection_uri"]
    assert "***" in created["connection_uri"]
    for path in ("/database-connections", f"/database-connections/{created['id']}"):
        assert "s3cr3t-Pa55" not in ft.call("GET", path).text
    stored = ft.harness.loop.run(ft.store.connection("alice", created["id"]))
    assert "s3cr3t-Pa55" not in stored.uri_encrypted  # encrypted at rest
    assert "s3cr3t-Pa55" not in (ft.data / "ft.db").read_bytes().decode("latin-1")
    assert ft.call("DELETE", f"/database-connections/{created['id']}").status_code == 200


def test_an_alias_is_unique_per_owner(ft: Finetuning, conn: dict[str, Any]) -> None:
    uri = f"sqlite:///{company_sqlite(ft.databases, 'again.db')}"
    again = ft.call(
        "POST", "/database-connections", json={"alias": "company", "connection_uri": uri}
    )
    assert again.status_code == 409 and "alias 'company'" in error_of(again)
    other = ft.connection(uri, alias="company", user="bob")  # another user's alias is free
    assert ft.call("DELETE", f"/database-connections/{other['id']}", user="bob").status_code == 200


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("postgresql://postgres:pw@127.0.0.1:1/test", "cannot read the database"),
        ("oracle://scott:tiger@127.0.0.1/orcl", "unsupported database dialect"),
        ("not a url", "not a valid SQLAlchemy URL"),
        ("sqlite:///relative.db", "must be absolute"),
        ("sqlite:///:memory:", "absolute path of a database file"),
        ("sqlite:////etc/passwd", "folder for user databases"),
        ("postgresql://postgres@127.0.0.1:5432/test?passfile=/etc/passwd", "is not allowed"),
        ("mysql://root@127.0.0.1/test?read_default_file=/etc/passwd", "is not allowed"),
    ],
)
def test_a_connection_that_cannot_be_used_is_400_with_the_reason(
    ft: Finetuning, uri: str, says: str
) -> None:
    resp = ft.call("POST", "/database-connections", json={"alias": "x", "connection_uri": uri})
    assert resp.status_code == 400, resp.text
    assert says in error_of(resp)


def test_bad_credentials_are_400_with_the_drivers_reason(ft: Finetuning, mariadb_url: str) -> None:
    uri = make_url(mariadb_url).set(password="wrong-pass").render_as_string(hide_password=False)
    resp = ft.call("POST", "/database-connections", json={"alias": "m", "connection_uri": uri})
    assert resp.status_code == 400
    assert "Access denied" in error_of(resp) and "wrong-pass" not in resp.text


def test_a_sqlite_file_must_stay_under_the_root(ft: Finetuning, tmp_path: Path) -> None:
    outside = company_sqlite(tmp_path / "elsewhere")
    link = ft.databases / "link.db"
    link.symlink_to(outside)
    for uri in (f"sqlite:///{outside}", f"sqlite:///{link}", f"sqlite:///{ft.databases}/../ft.db"):
        resp = ft.call("POST", "/database-connections", json={"alias": "e", "connection_uri": uri})
        assert resp.status_code == 400 and "user databases" in error_of(resp), uri


def test_the_suites_own_database_is_refused(tmp_path: Path) -> None:
    with OpenAIServer() as server:
        # A root that holds the suite's own files: they are still refused.
        platform = start_finetuning(tmp_path, server, user_databases_root=tmp_path)
        try:
            for name in ("ft.db", "jr.db", "finetuning.db"):
                (tmp_path / name).touch()
            resp = platform.call(
                "POST",
                "/database-connections",
                json={"alias": "own", "connection_uri": f"sqlite:///{tmp_path / 'ft.db'}"},
            )
            assert resp.status_code == 400 and "platform's own" in error_of(resp)
        finally:
            platform.close()


def test_an_operator_host_list_refuses_other_servers(tmp_path: Path, postgres_url: str) -> None:
    with OpenAIServer() as server:
        platform = start_finetuning(tmp_path, server, database_hosts=["10.0.0.0/8"])
        try:
            uri = make_url(postgres_url).set(drivername="postgresql")
            resp = platform.call(
                "POST",
                "/database-connections",
                json={"alias": "pg", "connection_uri": uri.render_as_string(hide_password=False)},
            )
            assert resp.status_code == 400
            assert "not one this platform may connect to" in error_of(resp)
            assert platform.call("GET", "/database-connections").json() == []
        finally:
            platform.close()


def test_connections_are_their_owners_alone(ft: Finetuning, conn: dict[str, Any]) -> None:
    for method, path in (
        ("GET", f"/database-connections/{conn['id']}"),
        ("DELETE", f"/database-connections/{conn['id']}"),
    ):
        resp = ft.call(method, path, user="mallory")
        assert resp.status_code == 404 and error_of(resp) == "Database connection not found"
    assert conn["id"] not in ft.call("GET", "/database-connections", user="mallory").text


# ---- golden records -------------------------------------------------------------------------


def test_golden_records_are_created_listed_and_deleted(
    ft: Finetuning, conn: dict[str, Any]
) -> None:
    made = ft.golden_records(conn["id"], [("How many projects?", "SELECT COUNT(*) FROM projects")])
    assert len(made) == 1 and made[0]["question"] == "How many projects?"
    assert set(made[0]) == {
        "id",
        "db_connection_id",
        "question",
        "sql_query",
        "metadata",
        "created_at",
    }
    listed = ft.call("GET", "/golden-records", db_connection_id=conn["id"], limit=1000).json()
    assert made[0]["id"] in [r["id"] for r in listed]
    assert ft.call("DELETE", f"/golden-records/{made[0]['id']}", user="mallory").status_code == 404
    assert ft.call("DELETE", f"/golden-records/{made[0]['id']}").status_code == 200
    again = ft.call("DELETE", f"/golden-records/{made[0]['id']}")
    assert again.status_code == 404 and error_of(again) == "Golden record not found"


def test_golden_records_page(
    ft: Finetuning, conn: dict[str, Any], records: list[dict[str, Any]]
) -> None:
    first = ft.call("GET", "/golden-records", db_connection_id=conn["id"], page=1, limit=5).json()
    second = ft.call("GET", "/golden-records", db_connection_id=conn["id"], page=2, limit=5).json()
    assert [r["id"] for r in first] == [r["id"] for r in records[:5]]
    assert [r["id"] for r in second] == [r["id"] for r in records[5:10]]
    assert ft.call("GET", "/golden-records", limit=5000).status_code == 400
    assert ft.call("GET", "/golden-records", user="mallory").json() == []


@pytest.mark.parametrize(
    ("sql", "says"),
    [
        ("DELETE FROM employees", "only SELECT/WITH queries are allowed"),
        ("SELECT * FROM employees; DROP TABLE employees", "single statement"),
        ("SELEC name FROM employees", "does not parse"),
        ("WITH x AS (DELETE FROM employees RETURNING *) SELECT * FROM x", "allowed"),
        ("SELECT " + "(" * 5000 + "1" + ")" * 5000, "parse"),
    ],
)
def test_a_golden_sql_that_is_no_read_is_400_and_none_is_stored(
    ft: Finetuning, conn: dict[str, Any], sql: str, says: str
) -> None:
    before = len(ft.call("GET", "/golden-records", limit=1000).json())
    body = [*golden(conn["id"], [("ok?", "SELECT 1")]), *golden(conn["id"], [("bad?", sql)])]
    resp = ft.call("POST", "/golden-records", json=body)
    assert resp.status_code == 400, resp.text
    assert error_of(resp).startswith("golden record 1: ") and says in error_of(resp)
    assert len(ft.call("GET", "/golden-records", limit=1000).json()) == before


def test_golden_records_of_an_unknown_connection_are_404(ft: Finetuning) -> None:
    resp = ft.call("POST", "/golden-records", json=golden("nope", [("q?", "SELECT 1")]))
    assert resp.status_code == 404 and error_of(resp) == "Database connection not found"


# ---- finetunings ----------------------------------------------------------------------------


def test_create_answers_201_with_every_documented_key(
    ft: Finetuning, conn: dict[str, Any], records: list[dict[str, Any]]
) -> None:
    created = ft.start(
        conn["id"],
        base_llm={
            "model_provider": "openai",
            "model_name": MODEL,
            "model_parameters": {"n_epochs": 1},
        },
    )
    assert set(created) == DOCUMENTED_KEYS
    assert created["status"] == "queued" and created["alias"] == "my_model"
    assert created["db_connection_id"] == conn["id"]
    for key in ("error", "finetuning_file_id", "finetuning_job_id", "model_id", "metadata"):
        assert created[key] is None, key
    assert created["base_llm"] == {
        "model_provider": "openai",
        "model_name": MODEL,
        "model_parameters": {
            "n_epochs": "1",
            "batch_size": "1",
            "learning_rate_multiplier": "auto",
        },
    }
    assert created["golden_records"] == [r["id"] for r in records]
    assert ISO.match(created["created_at"])
    for path in (f"/finetunings/{created['id']}", f"/finetuning-jobs/{created['id']}"):
        got = ft.call("GET", path)
        assert got.status_code == 200 and set(got.json()) == DOCUMENTED_KEYS
        assert got.json()["id"] == created["id"]
    # It runs: the provider's ids arrive while it does.
    running = ft.wait_status(created["id"], ("validating_files", "queued", "running"), timeout=60)
    assert running["id"] == created["id"]
    listed = ft.call("GET", "/finetunings", db_connection_id=conn["id"])
    assert listed.status_code == 200 and created["id"] in [f["id"] for f in listed.json()]
    assert ft.call("POST", f"/finetunings/{created['id']}/cancel").status_code == 200


def test_chosen_golden_records_and_metadata(
    ft: Finetuning, conn: dict[str, Any], records: list[dict[str, Any]]
) -> None:
    chosen = [r["id"] for r in records[:10]]
    created = ft.start(conn["id"], golden_records=chosen, metadata={"ticket": "T-1"})
    assert created["golden_records"] == chosen and created["metadata"] == {"ticket": "T-1"}
    ft.call("DELETE", f"/finetunings/{created['id']}")


@pytest.mark.parametrize(
    ("base_llm", "says"),
    [
        ({"model_provider": "anthropic", "model_name": MODEL}, "'anthropic' is not supported"),
        ({"model_provider": "openai", "model_name": "llama-3"}, "Model llama-3 not supported"),
        ({"model_provider": "openai", "model_name": "gpt-40"}, "Model gpt-40 not supported"),
        (
            {"model_provider": "openai", "model_name": MODEL, "model_parameters": {"n_epochs": 0}},
            "n_epochs must be an integer from 1 to 50",
        ),
        (
            {
                "model_provider": "openai",
                "model_name": MODEL,
                "model_parameters": {"learning_rate_multiplier": "fast"},
            },
            "learning_rate_multiplier must be a number",
        ),
        (
            {"model_provider": "openai", "model_name": MODEL, "model_parameters": {"epochs": 2}},
            "unknown model parameter 'epochs'",
        ),
    ],
)
def test_an_unsupported_base_llm_is_400(
    ft: Finetuning, conn: dict[str, Any], records: list[Any], base_llm: dict[str, Any], says: str
) -> None:
    resp = ft.call(
        "POST", "/finetunings", json={"db_connection_id": conn["id"], "base_llm": base_llm}
    )
    assert resp.status_code == 400, resp.text
    assert says in error_of(resp)


@pytest.mark.parametrize(
    "name", ["gpt-3.5-turbo", "gpt-3.5-turbo-1106", "gpt-4", "gpt-4-0613", "gpt-4o-mini-2024-07-18"]
)
def test_the_supported_model_families(
    ft: Finetuning, conn: dict[str, Any], records: list[Any], name: str
) -> None:
    created = ft.start(conn["id"], base_llm={"model_provider": "openai", "model_name": name})
    assert created["base_llm"]["model_name"] == name
    assert ft.call("DELETE", f"/finetunings/{created['id']}").status_code == 200


def test_the_documented_errors_with_their_texts(
    ft: Finetuning, conn: dict[str, Any], records: list[dict[str, Any]]
) -> None:
    base = {"model_provider": "openai", "model_name": MODEL}
    unknown = ft.call("POST", "/finetunings", json={"db_connection_id": "nope", "base_llm": base})
    assert unknown.status_code == 404 and error_of(unknown) == "Database connection not found"
    theirs = ft.call(
        "POST",
        "/finetunings",
        user="mallory",
        json={"db_connection_id": conn["id"], "base_llm": base},
    )
    assert theirs.status_code == 404 and error_of(theirs) == "Database connection not found"
    record = ft.call(
        "POST",
        "/finetunings",
        json={"db_connection_id": conn["id"], "base_llm": base, "golden_records": ["nope"]},
    )
    assert record.status_code == 404 and error_of(record) == "Golden record not found"
    empty = ft.connection(f"sqlite:///{company_sqlite(ft.databases, 'empty.db')}", alias="empty")
    none = ft.call("POST", "/finetunings", json={"db_connection_id": empty["id"], "base_llm": base})
    assert none.status_code == 404 and error_of(none) == "No golden records found"
    few = ft.call(
        "POST",
        "/finetunings",
        json={
            "db_connection_id": conn["id"],
            "base_llm": base,
            "golden_records": [r["id"] for r in records[:9]],
        },
    )
    assert few.status_code == 400 and "at least 10 golden records are required" in error_of(few)
    # Another connection's golden record is not this connection's.
    other = ft.golden_records(empty["id"], [("q?", "SELECT 1")])
    mixed = ft.call(
        "POST",
        "/finetunings",
        json={
            "db_connection_id": conn["id"],
            "base_llm": base,
            "golden_records": [r["id"] for r in records[:10]] + [other[0]["id"]],
        },
    )
    assert mixed.status_code == 404 and error_of(mixed) == "Golden record not found"


def test_finetunings_are_their_owners_alone(
    ft: Finetuning, conn: dict[str, Any], records: list[Any]
) -> None:
    created = ft.start(conn["id"])
    for method, path in (
        ("GET", f"/finetunings/{created['id']}"),
        ("GET", f"/finetuning-jobs/{created['id']}"),
        ("GET", f"/finetunings/{created['id']}/evaluation"),
        ("POST", f"/finetunings/{created['id']}/cancel"),
        ("DELETE", f"/finetunings/{created['id']}"),
    ):
        resp = ft.call(method, path, user="mallory", json={} if method == "POST" else None)
        assert resp.status_code == 404, (path, resp.text)
    assert ft.call("GET", "/finetunings", user="mallory").json() == []
    assert ft.call("GET", f"/finetunings/{created['id']}").status_code == 200
    ft.call("DELETE", f"/finetunings/{created['id']}")


def test_cancel_stops_the_provider_job_and_a_second_cancel_is_400(
    ft: Finetuning, conn: dict[str, Any], records: list[Any]
) -> None:
    created = ft.start(conn["id"])
    running = ft.wait_status(created["id"], ("validating_files", "running"), timeout=60)
    job_id = running["finetuning_job_id"]
    assert job_id is not None
    cancelled = ft.call("POST", f"/finetunings/{created['id']}/cancel", json={})
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert ft.provider.jobs[job_id].cancelled_at is not None
    again = ft.call("POST", f"/finetunings/{created['id']}/cancel", json={})
    assert again.status_code == 400 and "already ended (cancelled)" in error_of(again)
    assert ft.get(created["id"])["status"] == "cancelled"


def test_a_connection_in_use_cannot_be_deleted(ft: Finetuning, records: list[Any]) -> None:
    busy = ft.connection(f"sqlite:///{company_sqlite(ft.databases, 'busy.db')}", alias="busy")
    ft.golden_records(busy["id"], PAIRS)
    created = ft.start(busy["id"])
    refused = ft.call("DELETE", f"/database-connections/{busy['id']}")
    assert refused.status_code == 400 and "still running" in error_of(refused)
    deleted = ft.call("DELETE", f"/finetunings/{created['id']}")
    assert deleted.status_code == 200 and deleted.json() == {"id": created["id"]}
    assert ft.call("GET", f"/finetunings/{created['id']}").status_code == 404
    assert ft.call("DELETE", f"/database-connections/{busy['id']}").status_code == 200
    assert ft.call("GET", "/golden-records", db_connection_id=busy["id"]).status_code == 404


def test_delete_cancels_a_running_job_at_the_provider(
    ft: Finetuning, conn: dict[str, Any], records: list[Any]
) -> None:
    created = ft.start(conn["id"])
    running = ft.wait_status(created["id"], ("validating_files", "running"), timeout=60)
    assert ft.call("DELETE", f"/finetunings/{created['id']}").status_code == 200
    assert ft.provider.jobs[running["finetuning_job_id"]].cancelled_at is not None


def test_the_evaluation_is_pending_while_the_model_trains(
    ft: Finetuning, conn: dict[str, Any], records: list[Any]
) -> None:
    created = ft.start(conn["id"])
    evaluation = ft.evaluation(created["id"])
    assert evaluation["status"] == "pending" and len(evaluation["held_out"]) == 2
    assert set(evaluation["held_out"]) <= set(created["golden_records"])
    ft.call("DELETE", f"/finetunings/{created['id']}")


def test_malformed_bodies_are_400(ft: Finetuning) -> None:
    body: Any
    for body in ([], "x", {"db_connection_id": 5}, {"base_llm": "gpt-4"}):
        resp = ft.call("POST", "/finetunings", json=body)
        assert resp.status_code == 400, (body, resp.text)
    for body in ({}, [{"question": 1}], "x"):
        resp = ft.call("POST", "/golden-records", json=body)
        assert resp.status_code == 400, (body, resp.text)
