"""The AppMetrica pipeline: mapping file, one-pass formatter, extract to S3, load into the DWH.

Against the AppMetrica sandbox (real HTTP), moto's S3 server and the real PostgreSQL.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import yaml

from devtools.sandbox.appmetrica import (
    AppMetricaFaults,
    AppMetricaSandbox,
    generate_rows,
    iter_body,
)
from dwh_helper.catalogue.appmetrica import DEFAULT_FIELDS, RESOURCES
from dwh_helper.pipeline.appmetrica import (
    AppMetricaFile,
    day_keys,
    day_window,
    describe_raw_file,
    export_fields,
    extract_appmetrica,
    load_appmetrica_file,
    raw_key,
)
from dwh_helper.pipeline.load import CorruptFile, LoadError
from dwh_helper.sources.appmetrica import AppMetricaClient, ExportRequest
from dwh_helper.storage.s3 import ObjectStore
from dwh_helper.transform.appmetrica_formatter import CastError, RowFormatter, canonical_json
from dwh_helper.transform.appmetrica_mapping import (
    MAPPING_PATH,
    AppMetricaMappingError,
    load_appmetrica_mapping,
)
from tests.support.appmetrica_oracle import cast_record, row_uuid

APP = "1111"
TOKEN = "pipeline-token"
DAY = date(2024, 3, 2)


def _rows(resource: str, day: date = DAY, per_day: int = 60) -> list[dict[str, str]]:
    since, until = day_window(day)
    return list(generate_rows(resource, APP, since, until, seed=3, events_per_day=per_day))


def _body(rows: list[dict[str, str]], fmt: str, fields=None, bom: bool = False) -> bytes:
    fields = fields or tuple(rows[0])
    return b"".join(iter_body(rows, fields, fmt, use_utf8_bom=bom))


def _put(store: ObjectStore, key: str, body: bytes, metadata: dict | None = None) -> None:
    store.client.put_object(Bucket=store.bucket, Key=key, Body=body, Metadata=metadata or {})


def _formatter(resource: str, rows: list[dict[str, str]]):
    mapping = load_appmetrica_mapping()
    return RowFormatter(mapping.resource(resource), APP, rows[0].keys())


# -- the mapping file --------------------------------------------------------------------------


@pytest.mark.unit
def test_shipped_mapping_covers_the_three_resources_with_their_identity():
    mapping = load_appmetrica_mapping()
    assert mapping.source == "appmetrica"
    assert set(mapping.resources) == {"events", "installations", "sessions_starts"}
    events = mapping.resource("events")
    assert events.spec.qualified == '"appmetrica"."events"'
    assert events.identity == (
        "appmetrica_device_id",
        "event_timestamp",
        "event_name",
        "session_id",
        "event_json",
    )
    kinds = dict(events.fields)
    assert kinds["event_timestamp"] == "unix_seconds" and kinds["city"] == "text"
    assert kinds["appmetrica_device_id"] == "uint64" and kinds["event_json"] == "json"
    assert set(events.field_names) == set(DEFAULT_FIELDS["events"]) - {"application_id"}
    with pytest.raises(ValueError, match="'crashes' is not in the AppMetrica mapping"):
        mapping.resource("crashes")


def _write_mapping(tmp_path: Path, change) -> Path:
    data = yaml.safe_load(MAPPING_PATH.read_text(encoding="utf-8"))
    events = RESOURCES["events"]  # spelled out in full, as a custom mapping may
    data["resources"] = {
        "events": {
            "table": "events",
            "identity": list(events.identity),
            "fields": {name: None for name in events.field_names if name != "application_id"},
        }
    }
    change(data)
    path = tmp_path / "appmetrica.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.mark.unit
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["resources"]["events"].update(table="clicks"),
            "resources.events.table: no table appmetrica.clicks",
        ),
        (
            lambda d: d["resources"]["events"]["fields"].update(shoe_size="text"),
            "resources.events.fields.shoe_size: not a column",
        ),
        (
            lambda d: d["resources"]["events"]["fields"].update(city="bigint"),
            "resources.events.fields.city: kind 'bigint' cannot fill a text column",
        ),
        (
            lambda d: d["resources"]["events"]["fields"].update(event_timestamp="timestamp"),
            "kind 'timestamp' cannot fill a timestamptz column; use unix_seconds",
        ),
        (  # the words before the one vocabulary (docs/mappings.md) are refused, not guessed
            lambda d: d["resources"]["events"]["fields"].update(event_datetime="datetime"),
            "resources.events.fields.event_datetime",
        ),
        (
            lambda d: d["resources"]["events"]["fields"].update(application_id="bigint"),
            "fields.application_id: filled by the loader",
        ),
        (
            lambda d: d["resources"]["events"]["fields"].pop("event_name"),
            "resources.events.identity: event_name is not one of the fields",
        ),
        (
            lambda d: d["resources"]["events"].update(colour="red"),
            "resources.events.colour: Extra inputs are not permitted",
        ),
        (lambda d: d.pop("record_id"), "record_id: Field required"),
    ],
)
def test_invalid_mapping_files_name_the_entry(tmp_path, change, message):
    path = _write_mapping(tmp_path, change)
    with pytest.raises(AppMetricaMappingError) as error:
        load_appmetrica_mapping(path)
    assert str(path) in str(error.value)
    assert message in str(error.value)


# -- the one-pass formatter --------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize("resource", ["events", "installations", "sessions_starts"])
def test_row_uuid_is_the_schema_modules_key(resource):
    rows = _rows(resource, per_day=200)
    formatter = _formatter(resource, rows)
    assert len(rows) >= 10
    keys = set()
    for number, record in enumerate(rows, start=1):
        line = formatter.line(record)
        expected = row_uuid(resource, cast_record(resource, record, row=number), APP)
        assert uuid.UUID(line.split("\t")[0]) == expected
        keys.add(expected)
    assert len(keys) == len(rows)


@pytest.mark.unit
def test_line_casts_every_kind_and_nulls_empty_values():
    record = {
        "event_datetime": "2024-03-02 03:57:33",
        "event_json": '{"screen": "Запись", "items": 3, "note": "a\\tb\\nc"}',
        "event_name": "tab\there",
        "event_receive_datetime": "",
        "event_receive_timestamp": "1709351860",
        "event_timestamp": "1709351853",
        "session_id": "10000000012",
        "appmetrica_device_id": "18000000000000000000",
        "city": "Москва",
        "ios_ifa": "",
        "os_version": "back\\slash",
    }
    formatter = RowFormatter(load_appmetrica_mapping().resource("events"), APP, record)
    values = dict(zip(formatter.columns, formatter.line(record).split("\t"), strict=True))
    assert values["application_id"] == "1111"
    assert values["event_datetime"] == "2024-03-02 03:57:33"
    assert values["event_timestamp"] == "2024-03-02 03:57:33+00"
    assert values["event_receive_timestamp"] == "2024-03-02 03:57:40+00"
    assert values["event_receive_datetime"] == ""  # NULL: the formatter's copy_null
    assert values["session_id"] == "10000000012"
    assert values["appmetrica_device_id"] == "18000000000000000000"
    assert values["event_json"] == '{"items":3,"note":"a\\\\tb\\\\nc","screen":"Запись"}'
    assert values["event_name"] == "tab\\there"
    assert values["os_version"] == "back\\\\slash"
    assert values["city"] == "Москва" and values["ios_ifa"] == ""
    assert "installation_id" not in values  # not in the record: not a COPY column


def _copy_value(text: str) -> str | None:
    """One COPY text field back to its value (the formatter writes NULL as "")."""
    if text == "":
        return None
    escapes = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}
    out, chars = [], iter(text)
    for char in chars:
        out.append(escapes[next(chars)] if char == "\\" else char)
    return "".join(out)


def _typed(kind: str, text: str | None):
    """A formatter's COPY text of one kind as the Python value `cast_record` gives."""
    if text is None:
        return None
    return {
        "unix_seconds": lambda: datetime.fromisoformat(text.replace("+00", "+00:00")),
        "timestamp": lambda: datetime.fromisoformat(text),
        "bigint": lambda: int(text),
        "uint64": lambda: int(text),
        "boolean": lambda: {"t": True, "f": False}[text],
        "json": lambda: json.loads(text),
    }.get(kind, lambda: text)()


_ODD_VALUES = {
    "unix_seconds": ["0", "-86401", "+1709351853", "0001709351853", "253402300799"],
    "timestamp": ["2024-02-29 23:59:59", "1970-01-01 00:00:00"],
    "bigint": ["0", "007", "-5", "+12", str(2**63 - 1)],
    "uint64": ["0", "0018", str(2**64 - 1), "9" * 19, "1" * 20],
    "boolean": ["1", "0", "TRUE", " no "],
    "json": ['{"b": "a\\\\b", "a": [1.5, null]}', '"x\\ty"', "[]", '{"k": "\\u2028"}'],
    "text": ["a\tb", "line\nbreak", "cr\rhere", "back\\slash", "\\N", " ", "Ёлка"],
}


@pytest.mark.unit
@pytest.mark.parametrize("resource", ["events", "installations", "sessions_starts"])
@pytest.mark.parametrize("positional", [False, True])
def test_lines_decode_to_exactly_what_cast_record_gives(resource, positional):
    """A differential check: every generated line, decoded, equals the plain casts — for
    sandbox rows and for rows with odd but valid values (escapes, signs, leading zeros,
    empty fields) — and its row_uuid is the schema module's."""
    import random

    rows = _rows(resource, per_day=150)
    mapping = load_appmetrica_mapping().resource(resource)
    kinds = dict(mapping.fields)
    header = list(rows[0])
    chance = random.Random(7)
    for record in rows[::2]:
        for name in chance.sample([name for name in header if name in kinds], 6):
            record[name] = chance.choice([*_ODD_VALUES[kinds[name]], ""])
    formatter = (
        RowFormatter(mapping, APP, header=header)
        if positional
        else RowFormatter(mapping, APP, header)
    )
    for number, record in enumerate(rows, start=1):
        raw = [record[name] for name in header] if positional else record
        fields = formatter.line(raw).split("\t")
        assert len(fields) == len(formatter.columns)
        values = dict(zip(formatter.columns, map(_copy_value, fields), strict=True))
        expected = cast_record(resource, record, row=number)
        for name in formatter.columns[2:]:
            assert _typed(kinds[name], values[name]) == expected[name], (number, name)
        assert uuid.UUID(values["row_uuid"]) == row_uuid(resource, expected, APP), number


@pytest.mark.unit
@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("event_timestamp", "yesterday", "expected Unix seconds"),
        ("event_timestamp", "99999999999999", "out of range"),
        ("event_datetime", "2024-02-30 00:00:00", "expected 'YYYY-MM-DD hh:mm:ss'"),
        ("event_datetime", "2024-03-02T00:00:00", "expected 'YYYY-MM-DD hh:mm:ss'"),
        ("session_id", "12a", "not an integer"),
        ("session_id", str(2**63), "out of range for bigint"),
        ("appmetrica_device_id", "-1", "out of range for uint64"),
        ("appmetrica_device_id", str(2**64), "out of range for uint64"),
        ("appmetrica_device_id", "9" * 20, "out of range for uint64"),
        ("session_id", "9" * 19, "out of range for bigint"),
        ("event_json", '{"a": ', "not valid JSON"),
        ("event_json", '{"a": 1e999}', "out of range"),
    ],
)
def test_a_bad_value_raises_cast_error_naming_field_and_value(field, value, reason):
    record = dict(_rows("events")[0])
    record[field] = value
    formatter = _formatter("events", [record])
    with pytest.raises(CastError) as error:
        formatter.line(record)
    assert error.value.field == field and error.value.value == value
    assert reason in str(error.value)


@pytest.mark.unit
def test_csv_values_and_json_objects_give_the_same_line():
    rows = _rows("events")
    header = list(rows[0])
    mapping = load_appmetrica_mapping().resource("events")
    by_position = RowFormatter(mapping, APP, header=header)
    by_name = RowFormatter(mapping, APP, header)
    for record in rows:
        assert by_position.line([record[name] for name in header]) == by_name.line(record)
    # JSON nulls and numbers take the slow path and mean the same as their strings
    odd = {**rows[0], "session_id": int(rows[0]["session_id"]), "ios_ifa": None}
    assert by_name.line(odd) == by_name.line({**rows[0], "ios_ifa": ""})


@pytest.mark.unit
@pytest.mark.parametrize(
    "text",
    [
        '{"b": 1, "a": [true, null, "x"]}',
        '{"price": 929.56, "tiny": 0.00001, "huge": 1e16, "neg": -0.0}',
        '{"big": 123456789012345678901, "small": -5e-324, "e": 2.5E+20}',
        '"только строка"',
        '{"nested": {"z": 1, "y": {"x": "\\u0001\\n"}}}',
    ],
)
def test_canonical_json_is_what_json_dumps_writes(text):
    expected = json.dumps(
        json.loads(text), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    assert canonical_json(text) == expected


@pytest.mark.unit
def test_a_json_text_that_repeats_gives_the_same_line_and_a_bad_one_fails_every_time(
    monkeypatch,
):
    """The formatter remembers the canonical text of JSON that repeats within a file: a
    remembered text gives the same line as a fresh formatter's, a bad text is never
    remembered (each record holding it fails), and a full memory starts over."""
    from dwh_helper.transform import appmetrica_formatter

    monkeypatch.setattr(appmetrica_formatter._JsonTexts, "LIMIT", 3)
    rows = _rows("events", per_day=40)
    texts = ['{"b": 1, "a": "Ёж"}', "{}", '{"a": [1, 2.5]}', '{"c": null}', '{"b": 1, "a": "Ёж"}']
    formatter = _formatter("events", rows)
    for number, text in enumerate(texts * 3):
        record = {**rows[number % len(rows)], "event_json": text}
        expected = _formatter("events", [record]).line(record)  # nothing remembered yet
        assert formatter.line(record) == expected, (number, text)
        assert formatter.line(record) == expected, (number, text)  # remembered
    bad = {**rows[0], "event_json": '{"a": '}
    for _ in range(2):
        with pytest.raises(CastError, match="event_json"):
            formatter.line(bad)


@pytest.mark.unit
def test_describe_raw_file_from_key_or_metadata():
    key = raw_key(APP, "sessions_starts", DAY, "json", part_number=1, parts_count=4)
    assert key == (
        "raw/appmetrica/1111/sessions_starts/2024/03/02/sessions_starts_1111_20240302_"
        "part0002of0004.json"
    )
    info = describe_raw_file(key)
    assert (info.application_id, info.resource, info.fmt) == (APP, "sessions_starts", "json")
    assert info.window == (
        datetime(2024, 3, 2, tzinfo=UTC),
        datetime(2024, 3, 2, 23, 59, 59, tzinfo=UTC),
    )
    other = describe_raw_file(
        "elsewhere/file.csv", {"application-id": "2222", "resource": "events", "format": "csv"}
    )
    assert (other.application_id, other.resource, other.fmt, other.window) == (
        "2222",
        "events",
        "csv",
        None,
    )
    with pytest.raises(ValueError, match="not an AppMetrica raw file"):
        describe_raw_file("elsewhere/file.csv")


@pytest.mark.unit
def test_export_fields_defaults_and_adds_identity_fields():
    assert export_fields("events") == DEFAULT_FIELDS["events"]
    assert export_fields("events", "city, event_name") == (
        "city",
        "event_name",
        "appmetrica_device_id",
        "event_timestamp",
        "session_id",
        "event_json",
    )


# -- extract -----------------------------------------------------------------------------------


@pytest.fixture
def sandbox():
    with AppMetricaSandbox(
        TOKEN, (APP,), seed=3, events_per_day=60, faults=AppMetricaFaults(ready_after=1)
    ) as server:
        yield server


def _client(sandbox: AppMetricaSandbox) -> AppMetricaClient:
    return AppMetricaClient(TOKEN, base_url=sandbox.url, poll_interval=0, sleep=lambda s: None)


@pytest.mark.s3
def test_extract_lands_the_day_unchanged_with_metadata(sandbox, store):
    with _client(sandbox) as client:
        result = extract_appmetrica(client, store, APP, "events", DAY)
    key = raw_key(APP, "events", DAY)
    assert result.keys == [key] == day_keys(store, APP, "events", DAY)
    since, until = day_window(DAY)
    request = ExportRequest("events", APP, since, until, fields=DEFAULT_FIELDS["events"])
    body = store.client.get_object(Bucket=store.bucket, Key=key)["Body"].read()
    assert body == sandbox.body_bytes(request)
    assert result.bytes == len(body)
    metadata = store.head(key).metadata
    assert metadata["application-id"] == APP and metadata["resource"] == "events"
    assert metadata["window-start"] == "2024-03-02 00:00:00"
    assert metadata["window-end"] == "2024-03-02 23:59:59"
    assert metadata["format"] == "csv" and metadata["part"] == "1/1"
    assert metadata["fields"] == ",".join(DEFAULT_FIELDS["events"])


@pytest.mark.s3
def test_extract_in_parts_then_rerun_whole_removes_stale_parts(sandbox, store):
    sandbox.faults.max_rows_per_part = 25
    with _client(sandbox) as client:
        split = extract_appmetrica(client, store, APP, "events", DAY, fmt="json")
        assert len(split.keys) == 4  # 60 rows: 1 → 2 → 4 parts of at most 25
        assert split.keys[0].endswith("_part0001of0004.json")
        sandbox.faults.max_rows_per_part = None
        whole = extract_appmetrica(client, store, APP, "events", DAY, fmt="json")
    assert whole.keys == [raw_key(APP, "events", DAY, "json")]
    assert sorted(whole.removed) == sorted(split.keys)
    assert day_keys(store, APP, "events", DAY) == whole.keys


@pytest.mark.s3
def test_extract_narrowed_fields_include_identity_fields(sandbox, store):
    with _client(sandbox) as client:
        result = extract_appmetrica(client, store, APP, "events", DAY, ["city"])
    header = (
        store.client.get_object(Bucket=store.bucket, Key=result.keys[0])["Body"]
        .read()
        .decode()
        .splitlines()[0]
    )
    assert header.split(",") == [
        "city",
        "appmetrica_device_id",
        "event_timestamp",
        "event_name",
        "session_id",
        "event_json",
    ]


# -- load --------------------------------------------------------------------------------------


def _count(conn, table: str = "appmetrica.events") -> int:
    return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


@pytest.mark.db
@pytest.mark.s3
def test_load_csv_then_json_of_the_same_day_inserts_once(store, repo, dwh_conn):
    rows = _rows("events")
    csv_key = raw_key(APP, "events", DAY, "csv")
    json_key = raw_key(APP, "events", DAY, "json")
    _put(store, csv_key, _body(rows, "csv", bom=True))
    _put(store, json_key, _body(rows, "json"))

    first = load_appmetrica_file(store, csv_key, repo)
    assert (first.rows_read, first.inserted, first.rejected) == (len(rows), {"events": 60}, 0)
    again = load_appmetrica_file(store, csv_key, repo)
    as_json = load_appmetrica_file(store, json_key, repo)
    assert again.inserted == as_json.inserted == {"events": 0}
    assert as_json.rows_read == len(rows)
    assert _count(dwh_conn) == len(rows)

    sample = rows[7]
    stored = dwh_conn.execute(
        "SELECT application_id, event_timestamp, event_datetime, session_id, "
        "appmetrica_device_id, event_json, city, device_ipv6 FROM appmetrica.events "
        "WHERE row_uuid = %s",
        (row_uuid("events", cast_record("events", sample), APP),),
    ).fetchone()
    assert stored[0] == 1111
    assert stored[1] == datetime.fromtimestamp(int(sample["event_timestamp"]), UTC)
    assert stored[2] == datetime.fromisoformat(sample["event_datetime"])
    assert stored[3] == int(sample["session_id"]) and stored[4] == int(
        sample["appmetrica_device_id"]
    )
    assert stored[5] == (json.loads(sample["event_json"]) if sample["event_json"] else None)
    assert stored[6] == (sample["city"] or None) and stored[7] == sample["device_ipv6"]
    log = dwh_conn.execute(
        "SELECT s3_key, status, rows_read, window_start FROM load_log ORDER BY id"
    ).fetchall()
    assert [(k, s, r) for k, s, r, _ in log] == [
        (csv_key, "loaded", 60),
        (csv_key, "loaded", 60),
        (json_key, "loaded", 60),
    ]
    assert log[0][3] == datetime(2024, 3, 2, tzinfo=UTC)


@pytest.mark.db
@pytest.mark.s3
@pytest.mark.parametrize("resource", ["installations", "sessions_starts"])
def test_other_resources_load_into_their_tables(store, repo, dwh_conn, resource):
    rows = _rows(resource, per_day=400)
    key = raw_key(APP, resource, DAY)
    _put(store, key, _body(rows, "csv"))
    result = load_appmetrica_file(store, key, repo)
    assert result.inserted == {resource: len(rows)} and result.rejected == 0
    assert _count(dwh_conn, f"appmetrica.{resource}") == len(rows)
    if resource == "installations":
        flags = dwh_conn.execute(
            "SELECT count(*) FILTER (WHERE is_reinstallation), count(*) FILTER (WHERE "
            "publisher_id IS NULL) FROM appmetrica.installations"
        ).fetchone()
        assert flags == (
            sum(r["is_reinstallation"] == "true" for r in rows),
            sum(r["publisher_id"] == "" for r in rows),
        )


@pytest.mark.db
@pytest.mark.s3
@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_bad_records_go_to_rejects_and_the_rest_loads(store, repo, dwh_conn, fmt):
    rows = _rows("events", per_day=300)
    rows[4] = {**rows[4], "event_timestamp": "not-a-time"}
    key = raw_key(APP, "events", DAY, fmt)
    _put(store, key, _body(rows, fmt))
    result = load_appmetrica_file(store, key, repo, reject_ratio=0.05)
    assert result.rejected == 1 and result.inserted == {"events": len(rows) - 1}
    reject = dwh_conn.execute(
        "SELECT source, s3_key, entry, line, reason, raw, record_id FROM load_rejects"
    ).fetchone()
    assert reject[:4] == ("appmetrica", key, Path(key).name, 5)
    assert "field 'event_timestamp' = 'not-a-time'" in reject[4]
    assert reject[5] == rows[4]  # the record kept whole, field by field
    assert reject[6] == rows[4]["appmetrica_device_id"]


@pytest.mark.db
@pytest.mark.s3
@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_a_record_of_another_application_is_rejected_naming_it(store, repo, dwh_conn, fmt):
    rows = _rows("events", per_day=300)
    assert {row["application_id"] for row in rows} == {APP}  # a file holds its own id
    rows[7] = {**rows[7], "application_id": "2222"}
    rows[8] = {**rows[8], "application_id": f" {APP}"}  # the same application, spaced
    key = raw_key(APP, "events", DAY, fmt)
    _put(store, key, _body(rows, fmt))
    result = load_appmetrica_file(store, key, repo, reject_ratio=0.05)
    assert result.rejected == 1 and result.inserted == {"events": len(rows) - 1}
    line, reason, raw = dwh_conn.execute("SELECT line, reason, raw FROM load_rejects").fetchone()
    assert (line, raw) == (8, rows[7])
    assert "field 'application_id' = '2222'" in reason and "another application" in reason
    stored = dwh_conn.execute("SELECT DISTINCT application_id FROM appmetrica.events").fetchall()
    assert stored == [(int(APP),)]


@pytest.mark.db
@pytest.mark.s3
def test_too_many_rejects_load_nothing_and_journal_the_failure(store, repo, dwh_conn):
    rows = _rows("events")
    rows = [{**row, "session_id": "x"} if i % 2 else row for i, row in enumerate(rows)]
    key = raw_key(APP, "events", DAY, "json")
    _put(store, key, _body(rows, "json"))
    with pytest.raises(LoadError, match="30 of 60 records rejected"):
        load_appmetrica_file(store, key, repo)
    assert _count(dwh_conn) == 0 and _count(dwh_conn, "load_rejects") == 0
    assert dwh_conn.execute("SELECT status FROM load_log").fetchall() == [("failed",)]


@pytest.mark.db
@pytest.mark.s3
@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_a_truncated_file_is_a_load_error_naming_the_key(store, repo, dwh_conn, fmt):
    body = _body(_rows("events"), fmt)
    key = raw_key(APP, "events", DAY, fmt)
    _put(store, key, body[: len(body) // 2])
    with pytest.raises(LoadError, match="corrupt file, nothing loaded") as error:
        load_appmetrica_file(store, key, repo)
    assert error.value.key == key and not error.value.retryable
    assert _count(dwh_conn) == 0


@pytest.mark.db
@pytest.mark.s3
def test_a_csv_cut_inside_a_quoted_value_is_corrupt_not_a_short_value(store, repo, dwh_conn):
    body = _body(_rows("events"), "csv")
    cut = body.rindex(b'"{') + 5  # inside the last row's quoted event_json
    key = raw_key(APP, "events", DAY)
    _put(store, key, body[:cut])
    with pytest.raises(LoadError, match="corrupt file"):
        load_appmetrica_file(store, key, repo)
    assert _count(dwh_conn) == 0


@pytest.mark.db
@pytest.mark.s3
def test_a_key_that_says_nothing_is_a_load_error(store, repo):
    _put(store, "somewhere/export.csv", b"event_name\nx\n")
    with pytest.raises(LoadError, match="somewhere/export.csv: not an AppMetrica raw file"):
        load_appmetrica_file(store, "somewhere/export.csv", repo)


@pytest.mark.db
@pytest.mark.s3
def test_narrowed_file_leaves_other_columns_null_and_ignores_unknown_fields(store, repo, dwh_conn):
    rows = _rows("events")
    fields = ("event_name", "event_timestamp", "appmetrica_device_id", "session_id", "event_json")
    narrowed = [{**{f: row[f] for f in fields}, "brand_new_field": "?"} for row in rows]
    key = raw_key(APP, "events", DAY)
    _put(store, key, _body(narrowed, "csv"))
    result = load_appmetrica_file(store, key, repo)
    assert result.inserted == {"events": len(rows)}
    nulls = dwh_conn.execute(
        "SELECT count(*) FROM appmetrica.events WHERE city IS NULL AND event_datetime IS NULL "
        "AND event_name IS NOT NULL"
    ).fetchone()[0]
    assert nulls == len(rows)


@pytest.mark.unit
def test_json_in_other_shapes_reads_the_same_records(tmp_path):
    rows = _rows("events")
    mapping = load_appmetrica_mapping().resource("events")
    shapes = {
        "compact": _body(rows, "json"),
        "pretty": json.dumps({"data": rows}, indent=2, ensure_ascii=False).encode(),
        "bom": _body(rows, "json", bom=True),
        "other keys first": json.dumps({"meta": {"rows": 60}, "data": rows}).encode(),
        "nested values": json.dumps(
            {
                "data": [
                    {**row, "event_json": json.loads(row["event_json"] or "null")} for row in rows
                ]
            }
        ).encode(),
    }
    expected = [RowFormatter(mapping, APP, rows[0]).line(row) for row in rows]
    for name, body in shapes.items():
        path = tmp_path / f"{name}.json"
        path.write_bytes(body)
        file = AppMetricaFile(mapping, APP, "json")
        records = [record for _entry, _line, record in file.records(path.open("rb"))]
        assert len(records) == len(rows), name
        lines = [file.map_record(r)[0][1] for r in records]
        # the same rows (COPY column order may follow the file's field order)
        assert [_by_column(file.formatter.columns, line) for line in lines] == [
            _by_column(RowFormatter(mapping, APP, rows[0]).columns, line) for line in expected
        ], name


def _by_column(columns: tuple[str, ...], line: str) -> dict[str, str]:
    return dict(zip(columns, line.split("\t"), strict=True))


@pytest.mark.unit
@pytest.mark.parametrize(
    "body",
    [
        b'{"data":[{"event_name":"1"},{"event_name":"2"}',
        b'{"data":[{"event_name":"1"}]',
        b'{"data":[{"event_name":"1"}]} junk',
    ],
)
def test_a_json_file_cut_short_or_with_junk_is_corrupt(tmp_path, body):
    _file, records = _json_records(tmp_path, body)
    with pytest.raises(CorruptFile, match="not a complete Logs API JSON file"):
        list(records)


def _json_records(tmp_path: Path, body: bytes):
    """An events AppMetricaFile and the (lazy) records it reads from `body` as a JSON file."""
    path = tmp_path / "file.json"
    path.write_bytes(body)
    file = AppMetricaFile(load_appmetrica_mapping().resource("events"), APP, "json")
    return file, (record for _entry, _line, record in file.records(path.open("rb")))


@pytest.mark.unit
@pytest.mark.parametrize(
    "body",
    [b'{"errors": [{"message": "Try to use more parts"}], "code": 400}', b'[{"a": "1"}]'],
)
def test_a_json_file_without_a_data_array_is_corrupt_not_empty(tmp_path, body):
    _file, records = _json_records(tmp_path, body)
    with pytest.raises(CorruptFile, match='no top-level "data" array'):
        list(records)


@pytest.mark.unit
def test_a_json_file_of_another_shape_with_nested_floats_loads(tmp_path):
    rows = _rows("events")
    nested = [{**row, "event_json": {"price": 929.56, "tags": ["a"]}} for row in rows]
    body = json.dumps({"meta": {"rows": len(rows)}, "data": nested}).encode()
    file, records = _json_records(tmp_path, body)
    lines = [file.line(record) for record in records]
    assert len(lines) == len(rows)
    assert all('{"price":929.56,"tags":["a"]}' in line for line in lines)


@pytest.mark.unit
def test_empty_files_have_no_records(tmp_path):
    mapping = load_appmetrica_mapping().resource("events")
    for fmt, body in (("csv", b""), ("csv", b"event_name,city\n"), ("json", b'{"data":[]}')):
        path = tmp_path / f"empty.{fmt}"
        path.write_bytes(body)
        assert list(AppMetricaFile(mapping, APP, fmt).records(path.open("rb"))) == []
