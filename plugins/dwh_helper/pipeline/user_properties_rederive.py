"""Late rows: re-derive the people whose pending rows come at or before the newest migrated
row, from their earliest late row (the cut) on, in one transaction (docs/user-properties.md)."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from operator import itemgetter
from typing import Any

from dwh_helper.dwh.load_journal import write_rejects
from dwh_helper.dwh.repository import Repository
from dwh_helper.dwh.tables import CHANGEABLE_USER_PROPERTIES, PERMANENT_USER_PROPERTIES
from dwh_helper.dwh.user_properties_queries import (
    changeable_state,
    drop_history_from_cuts,
    iter_rows_from,
    states_before,
)
from dwh_helper.pipeline.user_properties_batches import (
    changeable_tuple,
    permanent_tuple,
    value_reports,
)
from dwh_helper.pipeline.user_properties_result import MigrationResult
from dwh_helper.pipeline.user_properties_state import PropertiesCache
from dwh_helper.transform.user_properties import TransformResult

log = logging.getLogger(__name__)

_NOT_LATE: Any = object()
_NO_STATE: Any = object()


def rederive(
    repo: Repository,
    cuts: dict[int | None, datetime],
    cache: PropertiesCache,
    lower: datetime | None,
    upper: datetime | None,
    batch_size: int,
    result: MigrationResult,
) -> None:
    """Re-derive late people's rows from their cut on, in one transaction.

    Reads every tmp_user_properties row from the earliest cut on (migrated, or pending
    within the run's bounds) in (event_time, uuid) order, replays each late person's
    events after their state before the cut, and marks their pending rows migrated (their
    nulled values reported then, as a batch would have).
    """
    started = time.monotonic()
    start = min(cuts.values())
    log.info(
        "%d people have rows at or before the newest migrated one: re-deriving their "
        "history from %s on",
        len(cuts),
        start.isoformat(),
    )
    processed = permanent_count = changeable_count = rows_read = nulled = repaired = 0
    with repo.transaction() as conn:
        states = states_before(conn, cuts)
        deleted, kept_firsts = drop_history_from_cuts(conn, cuts)
        has_first: set[int] = set(kept_firsts)
        for rows in iter_rows_from(conn, start, lower, upper, batch_size):
            rows_read += len(rows)
            permanent: list[tuple[Any, ...]] = []
            changeable: list[tuple[Any, ...]] = []
            marked: list[TransformResult] = []
            for row in rows:
                converted = cache.convert(row)
                if converted.errors or converted.changeable is None:
                    continue
                item = converted.changeable
                person = item["ehr_id"]
                cut = cuts.get(person, _NOT_LATE)
                if cut is _NOT_LATE or item["event_time"] < cut:
                    continue
                state = changeable_state(item)
                if states.get(person, _NO_STATE) != state:
                    states[person] = state
                    changeable.append(changeable_tuple(item))
                first = converted.permanent
                if first is not None and person not in has_first:
                    has_first.add(person)
                    permanent.append(permanent_tuple(first))
                if not row["migrated"]:
                    marked.append(converted)
            permanent.sort(key=itemgetter(0))
            if permanent:
                permanent_count += repo.copy_rows(PERMANENT_USER_PROPERTIES, permanent)
            if changeable:
                changeable_count += repo.copy_rows(CHANGEABLE_USER_PROPERTIES, changeable)
            if marked:
                uuids = [item.changeable["uuid"] for item in marked if item.changeable]
                processed += repo.mark_migrated(uuids)
                reports = list(value_reports(marked))
                if reports:
                    nulled += write_rejects(conn, reports)
                repaired += sum(item.repairs for item in marked)
            log.info(
                "re-deriving: %d rows read up to %s, %d late rows marked migrated so far",
                rows_read,
                rows[-1]["event_time"],
                processed,
            )
    result.processed += processed
    result.values_nulled += nulled
    result.values_repaired += repaired
    result.permanent_inserted += permanent_count
    result.changeable_inserted += changeable_count
    result.rederived_people += len(cuts)
    log.info(
        "re-derived %d people in %.2fs: %d changeable rows replaced by %d, %d permanent rows "
        "written, %d late rows migrated",
        len(cuts),
        time.monotonic() - started,
        deleted,
        changeable_count,
        permanent_count,
        processed,
    )
