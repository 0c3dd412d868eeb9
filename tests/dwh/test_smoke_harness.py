"""The harness gives each test a real, migrated database and a real S3 bucket."""

import pytest


@pytest.mark.db
def test_fresh_database_has_the_eight_tables(dwh_conn):
    names = {
        row[0]
        for row in dwh_conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    }
    assert {
        "events_part",
        "mobile_devices",
        "technical_data",
        "tmp_event_properties",
        "tmp_user_properties",
        "user_locations",
        "permanent_user_properties",
        "changeable_user_properties",
        "load_log",
        "load_rejects",
    } <= names
    assert dwh_conn.execute("SELECT count(*) FROM mobile_devices").fetchone()[0] == 0
