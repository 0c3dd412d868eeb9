"""The user-properties transform's contract, against PostgreSQL: a row it accepts is stored
unchanged (read back equal), whatever the raw values — NUL, full-width digits, spaces, signs,
huge numbers, odd timestamps."""

from __future__ import annotations

import uuid
from datetime import datetime
from itertools import count

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dwh_helper.dwh.repository import Repository
from dwh_helper.dwh.tables import CHANGEABLE_USER_PROPERTIES, PERMANENT_USER_PROPERTIES
from dwh_helper.transform.user_properties import transform_record

pytestmark = pytest.mark.db

_ids = count(1)

digits = st.text(alphabet="0123456789٣５ _+-.e", min_size=1, max_size=12)
texts = st.text(max_size=20)  # any code point, NUL and lone surrogates included
scalars = st.one_of(
    digits,
    texts,
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
)
properties = st.fixed_dictionaries(
    {"EHR_ID": st.one_of(digits, st.integers(min_value=-(2**64), max_value=2**64))},
    optional={
        "Gender": scalars,
        "age": scalars,
        "cohort_day": scalars,
        "registered_via_app": scalars,
        "source": scalars,
        "app_city": scalars,
        "push_permission": scalars,
        "telemed_files_sent": scalars,
    },
)
times = st.one_of(
    st.sampled_from(
        [
            "2024-03-02 00:57:33.008000",
            "2024-03-02T00:57:33Z",
            "2024-03-02T03:57:33+03:00",
            "2022-W46-1",
            "2022-11-14 00:57:32,668",
            "2022-11-14T00",
            "2024-02-30 00:00:00",
        ]
    ),
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(props=properties, when=times, language=texts, session=scalars)
def test_accepted_rows_are_stored_unchanged(dwh_conn, props, when, language, session):
    record_uuid = uuid.UUID(int=next(_ids))
    record = {
        "uuid": str(record_uuid),
        "event_time": when,
        "language": language,
        "session_id": session,
        "start_version": "5.1.0",
        "user_properties": props,
    }
    result = transform_record(record)
    if result.errors:
        assert result.changeable is None and result.permanent is None
        return
    repo = Repository(dwh_conn)
    with repo.transaction() as conn:
        repo.copy_rows(
            CHANGEABLE_USER_PROPERTIES,
            [tuple(result.changeable[c] for c in CHANGEABLE_USER_PROPERTIES.column_names)],
        )
        stored = conn.execute(
            "SELECT * FROM changeable_user_properties WHERE uuid = %s", (record_uuid,)
        ).fetchone()
        assert stored == tuple(
            result.changeable[c] for c in CHANGEABLE_USER_PROPERTIES.column_names
        )
        if result.permanent is not None:
            conn.execute(
                "DELETE FROM permanent_user_properties WHERE ehr_id = %s",
                (result.permanent["ehr_id"],),
            )
            repo.copy_rows(
                PERMANENT_USER_PROPERTIES,
                [tuple(result.permanent[c] for c in PERMANENT_USER_PROPERTIES.column_names)],
            )
            stored = conn.execute(
                "SELECT * FROM permanent_user_properties WHERE ehr_id = %s",
                (result.permanent["ehr_id"],),
            ).fetchone()
            assert stored == tuple(
                result.permanent[c] for c in PERMANENT_USER_PROPERTIES.column_names
            )
