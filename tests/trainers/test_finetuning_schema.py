"""describe_database against real SQLite, PostgreSQL and MariaDB; unreachable databases."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.support import nl2sql
from trainyard.trainers.finetuning import DatabaseUnreachable, describe_database, mask_password


def sqlite_database(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        nl2sql.create(conn.execute)
    return f"sqlite:///{path}"


def sync_postgres(url: str) -> str:
    return make_url(url).set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


@pytest.fixture
def pg_database(postgres_url: str, pg_schema: str) -> str:
    engine = create_engine(sync_postgres(postgres_url))
    with engine.begin() as conn:
        conn.execute(text(f'SET search_path TO "{pg_schema}"'))
        nl2sql.create(lambda sql: conn.execute(text(sql)))
    engine.dispose()
    return sync_postgres(postgres_url)


def test_sqlite_tables_with_keys_values_and_rows(tmp_path: Path) -> None:
    schema = describe_database(sqlite_database(tmp_path / "company.db"))
    assert schema.dialect == "sqlite"
    tables = {table.name: table for table in schema.tables}
    assert set(tables) == {"departments", "employees", "projects"}
    employees = tables["employees"]
    assert employees.schema is None
    assert "CREATE TABLE employees" in employees.create_sql
    assert "PRIMARY KEY (id)" in employees.create_sql
    assert "FOREIGN KEY(department_id) REFERENCES departments (id)" in employees.create_sql
    assert len(employees.sample_rows) == 3
    assert employees.sample_rows[0]["name"] == "Ada"
    assert tables["departments"].low_cardinality["region"] == ["north", "south"]
    assert employees.low_cardinality["title"] == ["agent", "engineer", "manager", "seller"]


def test_sqlite_is_read_never_written_nor_created(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.db"
    with pytest.raises(DatabaseUnreachable, match="does not exist"):
        describe_database(f"sqlite:///{missing}")
    assert not missing.exists()


def test_postgresql_schema(pg_database: str, pg_schema: str) -> None:
    schema = describe_database(pg_database, [pg_schema])
    assert schema.dialect == "postgresql"
    assert schema.schemas == [pg_schema]
    tables = {table.name: table for table in schema.tables}
    assert set(tables) == {"departments", "employees", "projects"}
    employees = tables["employees"]
    assert employees.schema == pg_schema
    assert f"CREATE TABLE {pg_schema}.employees" in employees.create_sql
    assert "PRIMARY KEY (id)" in employees.create_sql
    assert f"REFERENCES {pg_schema}.departments (id)" in employees.create_sql
    assert tables["departments"].low_cardinality["region"] == ["north", "south"]
    assert len(tables["projects"].sample_rows) == 3


def test_postgresql_unknown_schema(pg_database: str) -> None:
    with pytest.raises(DatabaseUnreachable, match="schema 'no_such_schema' does not exist"):
        describe_database(pg_database, ["no_such_schema"])


def test_async_driver_urls_are_read_with_sync_drivers(pg_database: str, pg_schema: str) -> None:
    url = make_url(pg_database).set(drivername="postgresql+asyncpg")
    schema = describe_database(url.render_as_string(hide_password=False), [pg_schema])
    assert len(schema.tables) == 3


@pytest.fixture
def mariadb_tables(mariadb_url: str) -> Iterator[tuple[str, str]]:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    parent, child = f"{prefix}_teams", f"{prefix}_players"
    engine = create_engine(mariadb_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                f"CREATE TABLE {parent} (id INTEGER NOT NULL, league VARCHAR(10), PRIMARY KEY (id))"
            )
        )
        conn.execute(
            text(
                f"CREATE TABLE {child} (id INTEGER NOT NULL, team_id INTEGER NOT NULL, "
                f"name VARCHAR(40), PRIMARY KEY (id), "
                f"FOREIGN KEY (team_id) REFERENCES {parent} (id))"
            )
        )
        conn.execute(text(f"INSERT INTO {parent} VALUES (1, 'east'), (2, 'west'), (3, 'east')"))
        conn.execute(text(f"INSERT INTO {child} VALUES (1, 1, 'Kim'), (2, 2, 'Lee')"))
    try:
        yield parent, child
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP TABLE IF EXISTS {child}"))
            conn.execute(text(f"DROP TABLE IF EXISTS {parent}"))
        engine.dispose()


def test_mariadb_schema(mariadb_url: str, mariadb_tables: tuple[str, str]) -> None:
    parent, child = mariadb_tables
    for uri in (mariadb_url, mariadb_url.replace("mysql+pymysql", "mariadb")):
        schema = describe_database(uri)
        assert schema.dialect in {"mysql", "mariadb"}
        tables = {table.name: table for table in schema.tables}
        assert {parent, child} <= set(tables)
        assert "PRIMARY KEY (id)" in tables[child].create_sql
        assert f"REFERENCES {parent} (id)" in tables[child].create_sql
        assert tables[parent].low_cardinality["league"] == ["east", "west"]
        assert [row["name"] for row in tables[child].sample_rows] == ["Kim", "Lee"]


def test_mariadb_bad_credentials_say_why_without_the_password(mariadb_url: str) -> None:
    url = make_url(mariadb_url).set(username="nobody_here", password="s3cret-Pa55")
    with pytest.raises(DatabaseUnreachable) as caught:
        describe_database(url.render_as_string(hide_password=False), timeout_seconds=5)
    assert "Access denied" in str(caught.value)
    assert "s3cret-Pa55" not in str(caught.value)


def test_unreachable_server_says_why_without_the_password() -> None:
    with pytest.raises(DatabaseUnreachable) as caught:
        describe_database("postgresql://user:s3cret-Pa55@127.0.0.1:1/db", timeout_seconds=2)
    message = str(caught.value)
    assert "s3cret-Pa55" not in message
    assert "127.0.0.1" in message and ("refused" in message or "connect" in message)


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("not a url", "not a valid SQLAlchemy URL"),
        ("oracle://u:p@host/db", "unsupported database dialect 'oracle'"),
        ("sqlite://", "needs a database file path"),
    ],
)
def test_bad_uris(uri: str, reason: str) -> None:
    with pytest.raises(DatabaseUnreachable, match=reason):
        describe_database(uri)


def test_mask_password() -> None:
    assert mask_password("postgresql://u:pw@h:5432/d") == "postgresql://u:***@h:5432/d"
    assert mask_password("sqlite:////data/x.db") == "sqlite:////data/x.db"
    assert "pw" not in mask_password("garbage pw")


def test_schema_reading_stops_at_its_timeout(tmp_path: Path) -> None:
    path = tmp_path / "big.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, kind VARCHAR(10))")
        conn.executemany(
            "INSERT INTO events (kind) VALUES (?)", ((f"k{i % 7}",) for i in range(50_000))
        )
    # A deadline already passed: the first long statement (the kind column's values) is stopped.
    with pytest.raises(DatabaseUnreachable, match="reading the schema took longer than 0s"):
        describe_database(f"sqlite:///{path}", timeout_seconds=0)


@pytest.mark.parametrize(
    "uri",
    [
        "mysql+pymysql://root@127.0.0.1/test?read_default_file=/etc/mysql/my.cnf",
        "postgresql://u@127.0.0.1/db?passfile=/root/.pgpass",
        "sqlite:////tmp/x.db?mode=rwc",
    ],
)
def test_driver_options_that_reach_this_machine_are_refused(uri: str) -> None:
    with pytest.raises(DatabaseUnreachable, match="is not allowed"):
        describe_database(uri)


def test_a_sqlite_name_with_uri_characters_is_a_name(tmp_path: Path) -> None:
    sqlite_database(tmp_path / "odd #1 ?mode=rwc.db")
    # The URL spells '?' as %3F; opened read-only all the same, the name is not a URI query.
    schema = describe_database(f"sqlite:///{tmp_path}/odd #1 %3Fmode=rwc.db")
    assert len(schema.tables) == 3
