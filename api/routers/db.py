"""`/db/<table>`: read (GET) and insert (POST) rows of the eight DWH tables."""

# No `from __future__ import annotations`: the endpoints are built in a loop and
# FastAPI must see their (generated) parameter and body types as real objects.

import logging
import time
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import Field

from api.deps import ApiSettingsDep, RepoDep, require_read, require_write
from api.errors import AUTH_ERRORS, ApiError, error_responses
from api.models import TABLE_MODELS, InsertResponse, TableModels
from dwh_helper.config import PostgresSettings
from dwh_helper.dwh.pages import select_page
from dwh_helper.dwh.tables import TableSpec
from dwh_helper.transform.values import INDEXED_TEXT_MAX_CHARS

log = logging.getLogger(__name__)

MAX_LIMIT: int = PostgresSettings.model_fields["select_max_limit"].default
"""The largest `limit` declared in OpenAPI (`DB_SELECT_MAX_LIMIT`'s default; a smaller setting
is enforced with 422)."""

router = APIRouter(prefix="/db", tags=["db"], dependencies=[Depends(require_read)])


def pk_param_type(spec: TableSpec) -> Any:
    """The type of the `pk` filter: the `pk` column's, with its bounds."""
    if spec.pk_type == "uuid":
        return uuid.UUID
    if spec.pk_type == "bigint":
        return Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
    if spec.pk_type == "integer":
        return Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
    return Annotated[
        str, Field(min_length=1, max_length=INDEXED_TEXT_MAX_CHARS, pattern=r"^[^\x00]*$")
    ]


def _add_table(url_name: str, models: TableModels) -> None:
    spec = models.spec
    columns = spec.column_names
    SortColumn = Literal[columns]  # type: ignore[valid-type]  # noqa: N806
    is_user_properties = spec.name == "tmp_user_properties"
    RowsModel = models.rows  # noqa: N806
    BatchModel = models.batch  # noqa: N806
    pk_help = f"Only rows whose `{spec.pk}` ({spec.pk_type}) equals this"
    PkType = pk_param_type(spec)  # noqa: N806

    def read_rows(
        request: Request,
        repo: RepoDep,
        pk: Annotated[PkType | None, Query(description=pk_help)] = None,
        limit: Annotated[
            int | None,
            Query(
                ge=1, le=MAX_LIMIT, description="Rows per page (default DB_SELECT_DEFAULT_LIMIT)"
            ),
        ] = None,
        after: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=4096,
                description="Cursor of the next page, as found in the `next` link",
            ),
        ] = None,
        sort_by: Annotated[SortColumn | None, Query(description="Column to sort on")] = None,
        sort_dir: Annotated[Literal["asc", "desc"], Query()] = "asc",
        migrated: Annotated[
            bool | None,
            Query(
                description="user-properties only: only rows already (true) or not yet (false) "
                "migrated",
                include_in_schema=is_user_properties,
            ),
        ] = None,
    ) -> Any:
        started = time.monotonic()
        page = select_page(
            repo,
            spec.name,
            pk=pk,
            limit=limit,
            sort_by=sort_by,
            sort_dir=sort_dir,
            migrated=migrated,
            after=after,
        )
        rows = page.rows
        log.info("GET /db/%s: %d rows in %.3fs", url_name, len(rows), time.monotonic() - started)
        following = None
        if page.after is not None:
            following = str(request.url.include_query_params(after=page.after))
        return {"rows": rows, "count": len(rows), "next": following}

    read_rows.__doc__ = (
        f"A page of `{spec.name}`, filtered on `{spec.pk}` with `pk`, sorted on `sort_by` then "
        f"the key ({', '.join(spec.key)}); follow `next` for the following page."
    )
    router.add_api_route(
        f"/{url_name}",
        read_rows,
        methods=["GET"],
        response_model=RowsModel,
        name=f"read_{spec.name}",
        operation_id=f"read_{spec.name}",
        summary=f"Read rows of {spec.name}",
        responses=error_responses(*AUTH_ERRORS, 422),
    )

    def insert_rows(batch: BatchModel, repo: RepoDep, api: ApiSettingsDep) -> InsertResponse:  # type: ignore[valid-type]
        rows = batch.data  # type: ignore[attr-defined]
        if len(rows) > api.db_max_post_rows:
            raise ApiError(
                413,
                f"{len(rows)} rows in one request; the limit is "
                f"API_DB_MAX_POST_ROWS={api.db_max_post_rows}: split the data",
            )
        started = time.monotonic()
        result = repo.insert_batch(spec.name, [row.model_dump(exclude_unset=True) for row in rows])
        log.info(
            "POST /db/%s: %d of %d rows inserted in %d statements, %.3fs",
            url_name,
            result.count,
            len(rows),
            result.batches,
            time.monotonic() - started,
        )
        return InsertResponse(
            inserted_ids=result.inserted_ids, count=result.count, batches=result.batches
        )

    insert_rows.__doc__ = (
        f"Insert rows into `{spec.name}`; rows whose key ({', '.join(spec.key)}) exists are "
        "skipped and not counted. Needs write access."
    )
    router.add_api_route(
        f"/{url_name}",
        insert_rows,
        methods=["POST"],
        response_model=InsertResponse,
        name=f"insert_{spec.name}",
        operation_id=f"insert_{spec.name}",
        summary=f"Insert rows into {spec.name}",
        dependencies=[Depends(require_write)],
        responses=error_responses(*AUTH_ERRORS, 409, 413, 422),
    )


for _url_name, _models in TABLE_MODELS.items():
    _add_table(_url_name, _models)
