"""The AppMetrica field catalogue is the one declaration: adding a field or a resource is one
edit there plus a migration (the recipe in docs/appmetrica.md, "Adding a field or a resource").

The recipe test makes that edit to the catalogue's source in a fresh interpreter (the same
text a maintainer would add), runs the migration step, and checks that the schema, the
mapping, the reader, the formatter, the loader, the export's default fields and the API's enum
all pick it up, with nothing else changed (the operator's choices are the catalogue's own
tuple: checked in-process, so the test does not import Airflow a second time).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from dwh_helper.catalogue import appmetrica as catalogue
from dwh_helper.catalogue.appmetrica import Resource, fields
from dwh_helper.dwh.appmetrica_schema import APPMETRICA_TABLES, table_spec
from dwh_helper.transform.appmetrica_formatter import RowFormatter
from dwh_helper.transform.appmetrica_mapping import default_mapping, load_appmetrica_mapping

ROOT = Path(__file__).resolve().parents[2]

# The recipe's one edit: a new field of events, and a new resource. The script inserts this
# text into the catalogue's source just before `RESOURCES` is built from `DECLARED`.
EDIT = """
DECLARED = (
    Resource(
        "events",
        DECLARED[0].fields + fields(("shoe_size", "bigint")),
        identity=DECLARED[0].identity,
        time_field=DECLARED[0].time_field,
    ),
    *DECLARED[1:],
    Resource(
        "crashes",
        fields(
            "crash_id",
            ("crash_timestamp", "unix_seconds"),
            ("crash_json", "json"),
            ("appmetrica_device_id", "uint64"),
            ("application_id", "bigint"),
        ),
        identity=("appmetrica_device_id", "crash_id"),
        time_field="crash_timestamp",
    ),
)
"""

SCRIPT = r"""
import importlib.util, json, sys, typing
from pathlib import Path

spec = importlib.util.find_spec("dwh_helper.catalogue.appmetrica")
source = Path(spec.origin).read_text()
marker = "\nRESOURCES: dict[str, Resource] ="
assert source.count(marker) == 1, "the catalogue's RESOURCES line moved: update the test"
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
exec(compile(source.replace(marker, EDIT + marker), spec.origin, "exec"), module.__dict__)

import boto3
from dwh_helper.dwh.appmetrica_schema import APPMETRICA_TABLES, create_appmetrica_schema
from dwh_helper.dwh.repository import Repository, open_connection
from dwh_helper.pipeline.appmetrica import export_fields, load_appmetrica_file, raw_key
from dwh_helper.storage.s3 import ObjectStore
from dwh_helper.transform.appmetrica_mapping import load_appmetrica_mapping
from api.routers import appmetrica as router

settings = json.loads(sys.argv[1])
with open_connection(settings["dsn"]) as conn:
    create_appmetrica_schema(conn)  # the recipe's migration step
    client = boto3.client(
        "s3", endpoint_url=settings["endpoint"], region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )
    store = ObjectStore(client, settings["bucket"])
    from datetime import date
    day = date(2024, 3, 1)
    files = {
        "events": "event_timestamp,event_name,appmetrica_device_id,shoe_size\n"
                  "1709251200,open,18000000000000000000,42\n",
        "crashes": '{"data":[{"crash_id":"c1","crash_timestamp":"1709251200",'
                   '"crash_json":"{\\"b\\":1,\\"a\\":2}","appmetrica_device_id":"7"}]}',
    }
    loaded = {}
    for resource, body in files.items():
        fmt = "csv" if resource == "events" else "json"
        key = raw_key("1111", resource, day, fmt)
        client.put_object(Bucket=settings["bucket"], Key=key, Body=body.encode())
        loaded[resource] = load_appmetrica_file(store, key, Repository(conn)).inserted
    rows = {
        "events": conn.execute("SELECT shoe_size FROM appmetrica.events").fetchall(),
        "crashes": conn.execute(
            "SELECT crash_id, crash_timestamp::text, crash_json::text, appmetrica_device_id::text"
            " FROM appmetrica.crashes"
        ).fetchall(),
    }
mapping = load_appmetrica_mapping()  # the shipped mapping file, unchanged
api_resources = [
    typing.get_args(typing.get_args(hints["resource"])[0])
    for route in router.router.routes
    if "resource" in (hints := typing.get_type_hints(route.endpoint, include_extras=True))
]
print(json.dumps({
    "columns": {
        name: {c.name: c.type for c in spec.columns} for name, spec in APPMETRICA_TABLES.items()
    },
    "mapped": {name: dict(m.fields) for name, m in mapping.resources.items()},
    "identity": {name: list(m.identity) for name, m in mapping.resources.items()},
    "export": {r: list(export_fields(r)) for r in ("events", "crashes")},
    "api": list(api_resources[0]),
    "loaded": loaded,
    "rows": rows,
}, default=str))
"""


@pytest.mark.db
@pytest.mark.s3
def test_adding_a_field_and_a_resource_is_one_edit_plus_a_migration(dwh_dsn, s3_server, bucket):
    settings = {"dsn": dwh_dsn, "endpoint": s3_server.endpoint_url, "bucket": bucket}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "plugins"), str(ROOT)]))
    done = subprocess.run(
        [sys.executable, "-c", f"EDIT = {EDIT!r}\n{SCRIPT}", json.dumps(settings)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])

    # schema: the new column typed by its kind; the new table with the loader's columns first
    assert seen["columns"]["events"]["shoe_size"] == "bigint"
    assert list(seen["columns"]["crashes"]) == [
        "row_uuid",
        "application_id",
        "crash_id",
        "crash_timestamp",
        "crash_json",
        "appmetrica_device_id",
    ]
    assert seen["columns"]["crashes"]["crash_timestamp"] == "timestamptz"
    # mapping: the shipped file maps both without an edit, the catalogue's kinds and identity
    assert seen["mapped"]["events"]["shoe_size"] == "bigint"
    assert seen["mapped"]["crashes"]["crash_json"] == "json"
    assert seen["identity"]["crashes"] == ["appmetrica_device_id", "crash_id"]
    # the export's default fields, the API's enum
    assert seen["export"]["events"][-1] == "shoe_size"
    assert seen["export"]["crashes"][0] == "crash_id"
    assert seen["api"] == [*catalogue.RESOURCE_NAMES, "crashes"]
    # reader + formatter + loader: the new field and the new resource land typed
    assert seen["loaded"] == {"events": {"events": 1}, "crashes": {"crashes": 1}}
    assert seen["rows"]["events"] == [[42]]
    assert seen["rows"]["crashes"] == [["c1", "2024-03-01 00:00:00+00", '{"a": 2, "b": 1}', "7"]]


@pytest.mark.unit
def test_every_reader_takes_its_choices_from_the_catalogue():
    from api.routers import appmetrica as router
    from dwh_helper.operators.appmetrica import RESOURCES as operator_resources

    api_resources = [
        typing.get_args(typing.get_args(hints["resource"])[0])
        for route in router.router.routes
        if "resource" in (hints := typing.get_type_hints(route.endpoint, include_extras=True))
    ]
    assert api_resources[0] == catalogue.RESOURCE_NAMES
    assert operator_resources is catalogue.RESOURCE_NAMES  # the catalogue's own tuple, not a copy
    assert tuple(APPMETRICA_TABLES) == tuple(load_appmetrica_mapping().resources)
    assert tuple(APPMETRICA_TABLES) == catalogue.RESOURCE_NAMES


@pytest.mark.unit
def test_a_catalogue_built_in_a_test_drives_table_mapping_and_formatter():
    crashes = Resource(
        "crashes",
        fields("crash_id", ("is_fatal", "boolean"), ("application_id", "bigint")),
        identity=("crash_id",),
        time_field="crash_id",
    )
    spec = table_spec(crashes)
    assert [(c.name, c.type) for c in spec.columns] == [
        ("row_uuid", "uuid"),
        ("application_id", "bigint"),
        ("crash_id", "text"),
        ("is_fatal", "boolean"),
    ]
    mapping = default_mapping({"crashes": crashes}).resource("crashes")
    formatter = RowFormatter(mapping, "1111", header=["is_fatal", "crash_id"])
    line = formatter.line(["1", "c1"])
    assert line.split("\t")[1:] == ["1111", "t", "c1"]
    assert formatter.columns == ("row_uuid", "application_id", "is_fatal", "crash_id")


@pytest.mark.unit
@pytest.mark.parametrize(
    ("declared", "message"),
    [
        (lambda: Resource("x", fields(("a", "date")), (), "a"), "unknown kind"),
        (lambda: Resource("x", fields("a", "a"), ("a",), "a"), "declared twice"),
        (lambda: Resource("x", fields("a"), ("a",), "a"), "application_id"),
        (
            lambda: Resource("x", fields("a", ("application_id", "bigint")), ("b",), "a"),
            "'b' is not one of its fields",
        ),
    ],
)
def test_a_wrong_declaration_fails_at_import_naming_the_resource(declared, message):
    with pytest.raises(ValueError, match=message) as error:
        declared()
    assert "AppMetrica resource 'x'" in str(error.value)


@pytest.mark.unit
def test_a_field_has_one_kind_in_every_resource():
    kinds = catalogue.field_kinds()
    assert kinds["appmetrica_device_id"] == "uint64" and kinds["event_timestamp"] == "unix_seconds"
    twice = Resource("y", fields(("city", "bigint"), ("application_id", "bigint")), (), "city")
    with pytest.raises(ValueError, match="'city' is text in one resource and bigint in y"):
        catalogue.field_kinds([*catalogue.RESOURCES.values(), twice])
