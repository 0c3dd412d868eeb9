"""Test harness: real PostgreSQL, moto's S3 server, Airflow configured before it is imported.

Fixtures:
- `pg_server` (session): DWH_TEST_DSN's server, or a throwaway cluster started here.
- `dwh_dsn` / `dwh_conn` / `repo`: a fresh database per test with the DWH schema applied.
- `empty_dsn`: a fresh database per test with nothing in it (migration tests).
- `s3_server` (session), `bucket` / `store` (per test): moto's S3 server and a fresh bucket.
- `airflow_db` (session): Airflow's sqlite metadata DB, migrated once.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Airflow reads its configuration when first imported: set it before anything imports it.
_AIRFLOW_HOME = tempfile.mkdtemp(prefix="dwh-test-airflow-")
os.environ["AIRFLOW_HOME"] = _AIRFLOW_HOME
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(ROOT / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_AIRFLOW_HOME}/airflow.db"
os.environ["AIRFLOW__CORE__EXECUTOR"] = "LocalExecutor"
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

import psycopg  # noqa: E402
import pytest  # noqa: E402
from psycopg import sql  # noqa: E402

from devtools.sandbox.postgres import TemporaryPostgres  # noqa: E402
from devtools.sandbox.s3 import LocalS3  # noqa: E402
from dwh_helper.dwh.repository import Repository, open_connection  # noqa: E402
from dwh_helper.dwh.schema import migrate  # noqa: E402
from dwh_helper.storage.s3 import ObjectStore  # noqa: E402
from tests.support.airflow_connections import postgres_connection  # noqa: E402

_counter = itertools.count()
TEMPLATE_DB = f"dwh_template_{os.getpid()}"


class PgServer:
    """A PostgreSQL server the tests may create and drop databases on."""

    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn

    def dsn_for(self, dbname: str) -> str:
        """The admin DSN with another database name."""
        params = psycopg.conninfo.conninfo_to_dict(self.admin_dsn)
        params["dbname"] = dbname
        return psycopg.conninfo.make_conninfo(**params)

    def create_database(self, template: str | None = None) -> str:
        """A new database (optionally from a template); returns its name."""
        name = f"dwh_test_{os.getpid()}_{next(_counter)}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
            if template:
                statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
            conn.execute(statement)
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database, closing its connections."""
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The PostgreSQL server of this session, with a migrated template database."""
    existing = os.environ.get("DWH_TEST_DSN")
    cluster = None
    if existing:
        server = PgServer(existing)
    else:
        cluster = TemporaryPostgres().start()
        server = PgServer(cluster.dsn)
    try:
        with psycopg.connect(server.admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(TEMPLATE_DB)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE_DB)))
        with open_connection(server.dsn_for(TEMPLATE_DB)) as conn:
            migrate(conn)
        yield server
    finally:
        if cluster is not None:
            cluster.stop()
        else:
            server.drop_database(TEMPLATE_DB)


@pytest.fixture
def dwh_dsn(pg_server: PgServer) -> Iterator[str]:
    """A fresh database with the DWH schema applied."""
    name = pg_server.create_database(template=TEMPLATE_DB)
    try:
        yield pg_server.dsn_for(name)
    finally:
        pg_server.drop_database(name)


@pytest.fixture
def empty_dsn(pg_server: PgServer) -> Iterator[str]:
    """A fresh, empty database."""
    name = pg_server.create_database()
    try:
        yield pg_server.dsn_for(name)
    finally:
        pg_server.drop_database(name)


@pytest.fixture
def dwh_conn(dwh_dsn: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the test's DWH database."""
    with open_connection(dwh_dsn) as conn:
        yield conn


@pytest.fixture
def repo(dwh_conn: psycopg.Connection) -> Repository:
    """A repository on the test's DWH database."""
    return Repository(dwh_conn)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[LocalS3]:
    """moto's S3 server on a free port, for the whole session."""
    with LocalS3() as server:
        yield server


@pytest.fixture
def bucket(s3_server: LocalS3) -> str:
    """A fresh, empty bucket for this test."""
    name = f"raw-{os.getpid()}-{next(_counter)}"
    s3_server.create_bucket(name)
    return name


@pytest.fixture
def store(s3_server: LocalS3, bucket: str) -> ObjectStore:
    """An ObjectStore on this test's bucket (small multipart threshold so tests exercise it)."""
    return ObjectStore(s3_server.client(), bucket, multipart_threshold=5 * 1024 * 1024)


@pytest.fixture
def aws_conn_env(s3_server: LocalS3, monkeypatch: pytest.MonkeyPatch) -> str:
    """`aws_default` as an AIRFLOW_CONN_ variable pointing at moto's server."""
    import json

    value = json.dumps(
        {
            "conn_type": "aws",
            "login": "testing",
            "password": "testing",
            "extra": {"endpoint_url": s3_server.endpoint_url, "region_name": s3_server.region},
        }
    )
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", value)
    return value


@pytest.fixture(scope="session")
def airflow_db() -> str:
    """Airflow's sqlite metadata DB, migrated once per session; returns AIRFLOW_HOME."""
    from airflow.utils import db

    db.initdb()
    return _AIRFLOW_HOME


@pytest.fixture
def airflow_env(
    airflow_db: str, dwh_dsn: str, bucket: str, aws_conn_env: str, monkeypatch: pytest.MonkeyPatch
) -> str:
    """Airflow ready for dag.test(): `dwh_postgres` on the test's database, `aws_default` on
    moto, `S3_BUCKET_NAME` on the test's bucket. Returns the DWH DSN."""
    monkeypatch.setenv("AIRFLOW_CONN_DWH_POSTGRES", postgres_connection(dwh_dsn))
    monkeypatch.setenv("S3_BUCKET_NAME", bucket)
    return dwh_dsn
