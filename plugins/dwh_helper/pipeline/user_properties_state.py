"""What a user-properties run remembers between batches, bounded: each person's latest state,
converted properties by their JSON text, and the people whose rows arrived late."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from dwh_helper.dwh.repository import Repository
from dwh_helper.dwh.user_properties_queries import changeable_state
from dwh_helper.transform.field_mapping import FieldMappings
from dwh_helper.transform.user_properties import (
    PropertiesResult,
    TransformResult,
    complete_record,
    transform_properties,
)


class LatestStates:
    """Each person's latest changeable state during a run: the database's, then the run's own.

    People are looked up in the database once (in bulk, per batch) and then
    followed in memory as the run writes their rows. At most `capacity` people
    are kept (the least recently written are dropped and looked up again if
    they come back), so memory stays bounded whatever the number of rows.
    """

    _NONE = object()

    def __init__(self, repo: Repository, capacity: int = 100_000) -> None:
        self.repo = repo
        self.capacity = capacity
        self._states: dict[int | None, Any] = {}

    def load(self, people: set[int | None]) -> None:
        """Fetch from the database the people this run has not seen yet."""
        missing = [person for person in people if person not in self._states]
        if not missing:
            return
        found = self.repo.latest_changeable(missing)
        for person in missing:
            row = found.get(person)
            self._states[person] = changeable_state(row) if row is not None else self._NONE
        self._trim(keep=people)

    def changed(self, person: int | None, state: tuple[Any, ...]) -> bool:
        """True (and remember `state`) when it differs from the person's latest state."""
        if self._states.get(person) == state:
            return False
        self._states.pop(person, None)
        self._states[person] = state
        return True

    def _trim(self, keep: set[int | None]) -> None:
        """Drop the least recently written people beyond capacity, never those in `keep`."""
        excess = len(self._states) - self.capacity
        if excess <= 0:
            return
        victims = []
        for person in self._states:
            if person not in keep:
                victims.append(person)
                if len(victims) == excess:
                    break
        for person in victims:
            del self._states[person]


class KnownFirsts:
    """People whose permanent row the run has already sent to be written.

    The table keeps a person's first row (`ON CONFLICT DO NOTHING`), so once a batch carries
    it, later batches need not send that person's row again only for the database to skip
    it. Bounded: beyond `capacity` people everyone is forgotten at once, and their next rows
    are sent (and skipped by the database) as if this memory did not exist.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._people: set[int] = set()

    def fresh(self, firsts: dict[int, tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """The rows of `firsts` (a batch's first permanent row per person) of people not sent
        before, in order; remembers those people."""
        known = self._people
        rows = [row for person, row in firsts.items() if person not in known]
        if len(known) + len(rows) > self.capacity:
            known.clear()
        known.update(firsts)
        return rows


class PropertiesCache:
    """Converted user_properties by their JSON text: a person's events mostly repeat them.

    Bounded: emptied once it holds `capacity` distinct texts.
    """

    def __init__(self, rules: FieldMappings, strict: bool, capacity: int = 5_000) -> None:
        self.rules = rules
        self.strict = strict
        self.capacity = capacity
        self._results: dict[Any, PropertiesResult] = {}

    def convert(self, row: Mapping[str, Any]) -> TransformResult:
        """The record's rows, reusing the conversion of properties seen before."""
        text = row["user_properties_json"]
        properties = self._results.get(text) if isinstance(text, str) else None
        if properties is None:
            properties = transform_properties(
                text, self.rules, self.strict, key="user_properties_json"
            )
            if isinstance(text, str):
                if len(self._results) >= self.capacity:
                    self._results.clear()
                self._results[text] = properties
        return complete_record(row, properties, self.rules)


class LatePeople:
    """People with a pending row at or before the newest migrated row, and where each one's
    history must be re-derived from (their earliest such row's event time).

    Pending rows come in (event_time, uuid) order, so a person's first row seen is their
    earliest; every later row of a late person is held back too.
    """

    def __init__(self, newest_migrated: datetime | None) -> None:
        self.newest_migrated = newest_migrated
        self.cuts: dict[int | None, datetime] = {}

    def hold_back(self, converted: list[TransformResult]) -> list[TransformResult]:
        """The records to write now: `converted` without late people's (re-derived later)."""
        if self.newest_migrated is None:
            return converted
        kept: list[TransformResult] = []
        for item in converted:
            row = item.changeable
            assert row is not None
            person, when = row["ehr_id"], row["event_time"]
            if person in self.cuts:
                continue
            if when <= self.newest_migrated:
                self.cuts[person] = when
                continue
            kept.append(item)
        return kept
