"""AppMetrica steps: export one day of one resource to S3 unchanged, and load a raw file.

`extract_appmetrica` lands each day's Logs API file(s) byte for byte at deterministic keys
`raw/appmetrica/<application_id>/<resource>/<YYYY>/<MM>/<DD>/<resource>_<app>_<YYYYMMDD>.<fmt>`
(`_partNNNNofMMMM` when AppMetrica asked for parts), with metadata, overwritten on re-run.
`load_appmetrica_file` loads one such file with the shared loader (`pipeline.load`) into
`appmetrica.<table>` through the declarative mapping (`transform/mappings/appmetrica.yaml`).
"""

from __future__ import annotations

import logging
import re
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from datetime import time as day_time
from pathlib import Path
from typing import Any, BinaryIO

from dwh_helper.catalogue.appmetrica import DEFAULT_FIELDS, FORMATS
from dwh_helper.dwh.repository import Repository
from dwh_helper.dwh.tables import TableSpec
from dwh_helper.pipeline.load import (
    DEFAULT_BATCH_SIZE,
    CorruptFile,
    LoadError,
    LoadResult,
    RawFormat,
    load_raw_file,
)
from dwh_helper.sources.appmetrica import AppMetricaClient, ExportedPart
from dwh_helper.sources.appmetrica_parse import LogsApiReader, UnreadableFile
from dwh_helper.storage.s3 import ObjectStore, file_sha256
from dwh_helper.transform.appmetrica_formatter import RowFormatter
from dwh_helper.transform.appmetrica_mapping import (
    AppMetricaMapping,
    ResourceMapping,
    load_appmetrica_mapping,
)

log = logging.getLogger(__name__)

SOURCE = "appmetrica"
RAW_PREFIX = "raw/appmetrica"
CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "json": "application/json"}
_KEY = re.compile(
    r"(?:^|/)raw/appmetrica/(?P<application_id>\d+)/(?P<resource>[a-z_0-9]+)/"
    r"(?P<year>\d{4})/(?P<month>\d{2})/(?P<day>\d{2})/[^/]+\.(?P<fmt>csv|json)$"
)


def day_prefix(application_id: str | int, resource: str, day: date) -> str:
    """S3 prefix of one application's raw files of one resource for one day."""
    return f"{RAW_PREFIX}/{application_id}/{resource}/{day:%Y/%m/%d}/"


def raw_key(
    application_id: str | int,
    resource: str,
    day: date,
    fmt: str = "csv",
    part_number: int = 0,
    parts_count: int = 1,
) -> str:
    """Deterministic S3 key of a day's file (or of one part of it)."""
    name = f"{resource}_{application_id}_{day:%Y%m%d}"
    if parts_count > 1:
        name += f"_part{part_number + 1:04d}of{parts_count:04d}"
    return f"{day_prefix(application_id, resource, day)}{name}.{fmt}"


def day_window(day: date) -> tuple[datetime, datetime]:
    """The export window of a day: 00:00:00 .. 23:59:59 (AppMetrica's bounds are inclusive)."""
    return datetime.combine(day, day_time(0)), datetime.combine(day, day_time(23, 59, 59))


def export_fields(
    resource: str,
    fields: Sequence[str] | str | None = None,
    mapping: AppMetricaMapping | None = None,
) -> tuple[str, ...]:
    """The fields to export: all documented ones by default; given ones plus identity fields.

    Narrowed exports always include the mapping's identity fields, so `row_uuid`
    still tells rows apart (they are appended when missing).
    """
    if isinstance(fields, str):
        fields = [item.strip() for item in fields.split(",") if item.strip()]
    if not fields:
        if resource not in DEFAULT_FIELDS:
            raise ValueError(f"no default fields for resource {resource!r}: pass fields explicitly")
        return DEFAULT_FIELDS[resource]
    chosen = list(dict.fromkeys(fields))
    resource_mapping = (mapping or load_appmetrica_mapping()).resource(resource)
    added = [name for name in resource_mapping.identity if name not in chosen]
    if added:
        log.info("%s: adding identity field(s) %s to the export", resource, ", ".join(added))
        chosen += added
    return tuple(chosen)


@dataclass
class ExtractResult:
    """What `extract_appmetrica` landed in S3."""

    application_id: str
    resource: str
    day: date
    keys: list[str] = field(default_factory=list)
    bytes: int = 0
    removed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary (XCom, logs)."""
        return {
            "application_id": self.application_id,
            "resource": self.resource,
            "day": self.day.isoformat(),
            "keys": list(self.keys),
            "bytes": self.bytes,
            "removed": list(self.removed),
            "seconds": round(self.seconds, 3),
        }


def extract_appmetrica(
    client: AppMetricaClient,
    store: ObjectStore,
    application_id: str | int,
    resource: str,
    day: date,
    fields: Sequence[str] | str | None = None,
    *,
    date_dimension: str = "default",
    fmt: str = "csv",
    use_utf8_bom: bool = False,
    skip_unavailable_shards: bool = False,
    mapping: AppMetricaMapping | None = None,
) -> ExtractResult:
    """Export one day of one resource and land the file(s) in S3 unchanged; a re-run overwrites.

    Keys are deterministic (see `raw_key`); objects of earlier runs under the day's
    prefix that this run did not write (say, parts of a split export) are removed, so
    the prefix always mirrors the latest export.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt {fmt!r}: use 'csv' or 'json'")
    started = time.perf_counter()
    application_id = str(application_id)
    chosen = export_fields(resource, fields, mapping)
    since, until = day_window(day)
    result = ExtractResult(application_id=application_id, resource=resource, day=day)
    with tempfile.TemporaryDirectory(prefix=f"appmetrica-{application_id}-") as tmp:
        parts: list[ExportedPart] = client.export(
            resource,
            application_id,
            since,
            until,
            fields=chosen,
            date_dimension=date_dimension,
            use_utf8_bom=use_utf8_bom,
            skip_unavailable_shards=skip_unavailable_shards,
            fmt=fmt,
            dest_dir=Path(tmp),
        )
        for part in parts:
            key = raw_key(application_id, resource, day, fmt, part.part_number, part.parts_count)
            store.upload_file(
                part.path,
                key,
                metadata={
                    "source": SOURCE,
                    "application-id": application_id,
                    "resource": resource,
                    "format": fmt,
                    "window-start": since.isoformat(sep=" "),
                    "window-end": until.isoformat(sep=" "),
                    "date-dimension": date_dimension,
                    "part": f"{part.part_number + 1}/{part.parts_count}",
                    "fields": ",".join(chosen),
                    "size": str(part.size),
                    "sha256": file_sha256(part.path),
                },
                content_type=CONTENT_TYPES[fmt],
            )
            result.keys.append(key)
            result.bytes += part.size
    for stale in store.iter_objects(day_prefix(application_id, resource, day)):
        if stale.key not in result.keys:
            store.delete(stale.key)
            result.removed.append(stale.key)
            log.info("removed %s, left by an earlier export of the same day", stale.key)
    result.seconds = time.perf_counter() - started
    log.info(
        "extracted AppMetrica %s of application %s for %s: %d file(s), %d bytes in %.1fs",
        resource,
        application_id,
        day,
        len(result.keys),
        result.bytes,
        result.seconds,
    )
    return result


def day_keys(store: ObjectStore, application_id: str | int, resource: str, day: date) -> list[str]:
    """The raw files already in S3 for one application, resource and day (re-loads)."""
    return sorted(
        info.key for info in store.iter_objects(day_prefix(application_id, resource, day))
    )


# -- loading -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawFileInfo:
    """What a raw file is: its application, resource, format and export window."""

    application_id: str
    resource: str
    fmt: str
    window: tuple[datetime, datetime] | None = None


def describe_raw_file(key: str, metadata: dict[str, str] | None = None) -> RawFileInfo:
    """Application, resource, format and window of a raw file, from its metadata or its key.

    Raises ValueError saying what is missing when neither tells.
    """
    metadata = metadata or {}
    match = _KEY.search(key)
    application_id = metadata.get("application-id") or (match and match["application_id"])
    resource = metadata.get("resource") or (match and match["resource"])
    fmt = metadata.get("format") or (match and match["fmt"]) or Path(key).suffix.lstrip(".")
    if not application_id or not resource or fmt not in FORMATS:
        raise ValueError(
            "not an AppMetrica raw file: expected a key raw/appmetrica/<application_id>/"
            "<resource>/<YYYY>/<MM>/<DD>/<name>.csv|json or the object metadata "
            "application-id, resource and format"
        )
    window = None
    if metadata.get("window-start") and metadata.get("window-end"):
        window = (
            datetime.fromisoformat(metadata["window-start"]).replace(tzinfo=UTC),
            datetime.fromisoformat(metadata["window-end"]).replace(tzinfo=UTC),
        )
    elif match:
        window = tuple(  # type: ignore[assignment]
            moment.replace(tzinfo=UTC)
            for moment in day_window(
                date(int(match["year"]), int(match["month"]), int(match["day"]))
            )
        )
    return RawFileInfo(str(application_id), str(resource), fmt, window)


class AppMetricaTable:
    """The loader's target table: its spec, the COPY columns (set once the file's fields
    are known) and the columns whose invalid values are stored NULL."""

    first_per_file = False
    copy_dialect = RowFormatter.copy_dialect

    def __init__(self, spec: TableSpec, nullable: frozenset[str] = frozenset()) -> None:
        self.spec = spec
        self.columns: tuple[str, ...] = ()
        self.null_on_invalid = nullable


class AppMetricaFile:
    """One raw file's reading and mapping for `load_raw_file` (a RecordMapping and the
    records of a RawFormat): the reader (`sources.appmetrica_parse`) hands the header or the
    first record's keys to `bind`, which compiles the RowFormatter for them."""

    source = SOURCE

    def __init__(
        self,
        resource_mapping: ResourceMapping,
        application_id: str,
        fmt: str,
        *,
        record_id: str = "appmetrica_device_id",
        label: str = "",
    ) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"format {fmt!r}: use 'csv' or 'json'")
        self.resource_mapping = resource_mapping
        self.application_id = application_id
        self.fmt = fmt
        self.record_id = record_id
        self.label = label
        self.table = AppMetricaTable(
            resource_mapping.spec,
            frozenset(resource_mapping.field_names) - resource_mapping.rejecting,
        )
        self.tables = (self.table,)
        self.formatter: RowFormatter | None = None
        self._line = self._unbound
        self.reader = LogsApiReader(
            fmt,
            lambda fields, structs: self.bind(fields, positional=True, structs=structs),
            dict(resource_mapping.fields),
        )
        self.details: dict[str, Any] = {}
        """What load_log.details reports of this file (the identity it was keyed by)."""

    @staticmethod
    def _unbound(record: Any) -> str:
        raise RuntimeError("the file's fields are not known yet")

    def bind(
        self,
        fields: Sequence[str],
        *,
        positional: bool = False,
        structs: bool = False,
    ) -> RowFormatter:
        """Compile the formatter for the fields this file holds; logs fields left out or missing.

        `positional`: records are value lists in the order of `fields` (a CSV header), or
        with `structs` msgspec Structs of these fields in this order.
        """
        formatter = RowFormatter(
            self.resource_mapping,
            self.application_id,
            fields,
            header=fields if positional else None,
            structs=structs,
        )
        known = set(self.resource_mapping.field_names) | {"application_id"}
        if not known.intersection(fields):
            shown = ", ".join(repr(name[:40]) for name in list(fields)[:5])
            raise CorruptFile(
                f"the header holds none of the {self.resource_mapping.resource} fields "
                f"(it starts {shown or 'empty'}): not a Logs API export (an error page saved "
                "as the file?); re-export the day"
            )
        unmapped = [name for name in fields if name not in known]
        if unmapped:
            log.warning(
                "%s: field(s) not in the AppMetrica mapping, not loaded: %s (to load them, "
                "declare them in dwh_helper/catalogue/appmetrica.py with a migration: "
                "docs/appmetrica.md, 'Adding a field or a resource')",
                self.label,
                ", ".join(unmapped),
            )
        if formatter.missing:
            missing_identity = [n for n in self.resource_mapping.identity if n in formatter.missing]
            log.log(
                logging.WARNING if missing_identity else logging.INFO,
                "%s: %d mapped field(s) not in the file, left NULL: %s%s",
                self.label,
                len(formatter.missing),
                ", ".join(formatter.missing),
                f" (identity field(s) {', '.join(missing_identity)} missing: row_uuid is "
                "computed from every field the file holds instead, so only exact duplicates "
                "collapse)"
                if missing_identity
                else "",
            )
        self.details = {
            "identity": "all fields" if formatter.identity_fallback else "declared",
            "identity_fields": list(formatter.identity),
        }
        if formatter.identity_fallback:
            self.details["identity_missing"] = [
                n for n in self.resource_mapping.identity if n in formatter.missing
            ]
        self.formatter = formatter
        self.table.columns = formatter.columns
        self._line = formatter.line
        return formatter

    @property
    def line(self) -> Any:
        """The COPY line of one raw record (the compiled formatter's, once the file is bound)."""
        return self._line

    def decode(self, raw: Any) -> Any:
        """The raw record as read (CSV: the row's values; JSON: the object)."""
        return raw

    def map_record(self, record: Any) -> list[tuple[AppMetricaTable, str, None]]:
        """[(table, COPY line, None)] (fast path); raises for a value it does not take."""
        return [(self.table, self._line(record), None)]

    def map_checked(self, record: Any) -> Any:
        """The checked path for one record (see `RowFormatter.checked`): its line, the values
        stored NULL and the repairs; CastError (a ValueError) rejects the record."""
        if self.formatter is None:
            raise RuntimeError("the file's fields are not known yet")
        checked = self.formatter.checked(record)
        checked.lines = [(self.table, line, key) for _, line, key in checked.lines]
        kept = self.reject_record(record)
        if isinstance(kept, dict) and kept.get(self.record_id):
            checked.record_id = str(kept[self.record_id])
        return checked

    def records(self, source: BinaryIO) -> Iterator[tuple[str, int, Any]]:
        """(file name, record number from 1, record) of every record of a binary stream."""
        for entry, first, chunk in self.chunks(source):
            for offset, record in enumerate(chunk):
                yield entry, first + offset, record

    def chunks(self, source: BinaryIO) -> Iterator[tuple[str, int, list[Any]]]:
        """(file name, number of the first record from 1, records) in chunks (see
        `sources.appmetrica_parse.LogsApiReader`); CorruptFile when the file is unreadable."""
        try:
            yield from self.reader.chunks(source)
        except UnreadableFile as exc:
            raise CorruptFile(str(exc)) from exc

    def reject_record(self, raw: Any) -> Any:
        """A rejected record as kept in load_rejects: field → value."""
        return self.reader.as_dict(raw)

    def raw_format(self) -> RawFormat:
        """The RawFormat reading this file."""
        return RawFormat(source=SOURCE, records=self.records, chunks=self.chunks, streamed=True)


def load_appmetrica_file(
    store: ObjectStore,
    key: str,
    repo: Repository,
    mapping: AppMetricaMapping | None = None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    reject_ratio: float = 0.01,
    reload: bool = False,
    temp_dir: Path | None = None,
) -> LoadResult:
    """Load one raw AppMetrica file from S3 into `appmetrica.<table>` (one transaction).

    Application, resource and format come from the object's metadata (written by
    `extract_appmetrica`) or from its key. Loading the same file again inserts nothing.
    """
    info = store.head(key)
    try:
        described = describe_raw_file(key, info.metadata if info is not None else None)
        mapping = mapping or load_appmetrica_mapping()
        resource_mapping = mapping.resource(described.resource)
    except ValueError as exc:
        raise LoadError(key, str(exc)) from exc
    file = AppMetricaFile(
        resource_mapping,
        described.application_id,
        described.fmt,
        record_id=mapping.record_id,
        label=key,
    )
    return load_raw_file(
        store,
        key,
        repo,
        file,
        file.raw_format(),
        batch_size=batch_size,
        reject_ratio=reject_ratio,
        window=described.window,
        info=info,
        reload=reload,
        temp_dir=temp_dir,
    )
