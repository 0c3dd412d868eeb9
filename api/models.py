"""Request and response models of `/db`, generated from the DWH table specs."""

from __future__ import annotations

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    create_model,
)

from dwh_helper.dwh.models import model_name, record_model, row_model
from dwh_helper.dwh.tables import DWH_TABLES, TableSpec

TABLE_URL_NAMES: dict[str, str] = {
    "events-part": "events_part",
    "mobile-devices": "mobile_devices",
    "permanent-user-properties": "permanent_user_properties",
    "changeable-user-properties": "changeable_user_properties",
    "technical-data": "technical_data",
    "event-properties": "tmp_event_properties",
    "user-properties": "tmp_user_properties",
    "user-locations": "user_locations",
}
"""URL name under `/db/` → DWH table name."""


class InsertResponse(BaseModel):
    """What a POST inserted: keys of the new rows (conflicts skipped), their count, statements."""

    inserted_ids: list[str]
    count: int = Field(description="Rows inserted; rows that already existed are not counted")
    batches: int = Field(description="INSERT statements run (chunked under 65,535 parameters)")


def batch_model(spec: TableSpec, row: type[BaseModel]) -> type[BaseModel]:
    """The POST body `{"data": [...]}` of `spec`."""
    return create_model(  # type: ignore[call-overload]
        model_name(spec.name, "Batch"),
        __config__=ConfigDict(extra="forbid"),
        __doc__=f"Rows to insert into {spec.name}; existing keys are skipped.",
        data=(list[row], Field(min_length=1, description="At least one row")),  # type: ignore[valid-type]
    )


def rows_model(spec: TableSpec, record: type[BaseModel]) -> type[BaseModel]:
    """The GET answer `{"rows": [...], "count": N, "next": URL | null}` of `spec`."""
    return create_model(  # type: ignore[call-overload]
        model_name(spec.name, "Rows"),
        __doc__=f"A page of rows of {spec.name}.",
        rows=(list[record], ...),  # type: ignore[valid-type]
        count=(int, Field(description="Rows on this page")),
        next=(
            str | None,
            Field(None, description="URL of the next page (same filters, `after` set); null last"),
        ),
    )


class TableModels:
    """The four models of one table."""

    def __init__(self, spec: TableSpec) -> None:
        self.spec = spec
        self.row = row_model(spec)
        self.record = record_model(spec)
        self.batch = batch_model(spec, self.row)
        self.rows = rows_model(spec, self.record)


TABLE_MODELS: dict[str, TableModels] = {
    url_name: TableModels(DWH_TABLES[table]) for url_name, table in TABLE_URL_NAMES.items()
}
"""Models per URL name."""
