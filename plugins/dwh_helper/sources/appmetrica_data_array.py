"""Read the items of a Logs API JSON file (`{"data": [{...}, ...]}`) in runs, streamed.

`iter_data_runs(handle, decode_run)` reads the file block by block (memory stays about
one block) and hands `decode_run` the bytes of a JSON array holding every whole item of
the block — one decoder call per ~1,000 items instead of one per item. The end of the
last whole item is found by looking back for a `}` followed by `,{` or `]`; a `}` inside
a string or a nested value cannot end a valid array there, so the decoder rejects it,
and the reader then goes on item by item (trying each candidate end in turn) for the
rest of the file. A file cut short raises `msgspec.DecodeError`.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, TypeVar

import msgspec

Item = TypeVar("Item")

BLOCK = 1 << 20
"""Bytes read at a time."""

BOM = b"\xef\xbb\xbf"
"""A UTF-8 byte order mark, skipped when the file starts with one."""

FAST_TRIES = 4
"""Candidate ends tried, from the last back, before going item by item (a `},{` inside an
`event_json` string is common enough that the last candidate is sometimes false)."""

MAX_ITEM = 64 << 20
"""An item (or broken stretch) longer than this is an error, not a reason to read on."""

_DATA_HEAD = re.compile(rb'[ \t\r\n]*\{[ \t\r\n]*"data"[ \t\r\n]*:[ \t\r\n]*\[[ \t\r\n]*')
# The end of an item in the data array: `}` then `,` and the next `{`, or `]`.
_ITEM_END = re.compile(rb"\}[ \t\r\n]*(?:,[ \t\r\n]*\{|\])")
# The last item followed by a comma, then the array's end: `},]` (invalid JSON).
_TRAILING_COMMA = re.compile(rb"\}[ \t\r\n]*,[ \t\r\n]*\][ \t\r\n]*\}[ \t\r\n]*$")


class NotADataArray(ValueError):
    """The file does not start like `{"data": [`: read `replay(handle)` with a general parser."""

    def __init__(self, head: bytes) -> None:
        super().__init__('the file does not start with {"data": [')
        self.head = head

    def replay(self, handle: BinaryIO) -> BinaryIO:
        """The whole file again: the bytes already read, then the rest of `handle`."""
        return io.BufferedReader(_Replay(self.head, handle))  # type: ignore[return-value]


class _Replay(io.RawIOBase):
    def __init__(self, head: bytes, handle: BinaryIO) -> None:
        self._head, self._handle = head, handle

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            data, self._head = self._head[: len(buffer)], self._head[len(buffer) :]
        else:
            data = self._handle.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def iter_data_runs(
    handle: BinaryIO, decode_run: Callable[[memoryview], list[Item]]
) -> Iterator[list[Item]]:
    """Lists of items, in file order, each list `decode_run` of a JSON array of whole items.

    `decode_run` gets a view into the reader's buffer (valid during the call only).
    Raises NotADataArray before yielding anything when the file has another shape, and
    msgspec.DecodeError when it is cut short or broken (after the items before that point).
    """
    buffer = bytearray(handle.read(max(BLOCK, 4096)))  # the head whole, whatever the block
    if buffer.startswith(BOM):
        del buffer[: len(BOM)]
    head = _DATA_HEAD.match(buffer)
    if head is None:
        raise NotADataArray(bytes(buffer))
    start = search = head.end()  # always >= 1: the byte before an item can become "["
    if buffer[start : start + 1] == b"]":
        _check_tail(bytes(buffer[start + 1 :]), handle)
        return
    careful_until = -1  # item by item while `start` is at or before this position
    while True:
        items: list[Item] | None = None
        if start > careful_until:  # every whole item of the buffer at once
            ends = _last_item_ends(buffer, start, FAST_TRIES)
            for end in ends:  # the last candidate first; one inside a value fails to decode
                try:
                    items = _decode_in_place(buffer, start, end, decode_run)
                    break
                except msgspec.DecodeError:
                    continue
            if ends and items is None:  # item by item up to the last candidate
                careful_until, search = ends[0], start
                continue
        else:  # the next candidate end only
            match = _ITEM_END.search(buffer, search)
            ends = [match.start()] if match else []
            if ends:
                end = ends[0]
                try:
                    items = _decode_in_place(buffer, start, end, decode_run)
                except msgspec.DecodeError:  # that `}` was inside a string or a nested value
                    search = end + 1
                    continue
        if not ends:
            if len(buffer) - start > MAX_ITEM:
                raise msgspec.DecodeError(
                    f"no end of an item within {MAX_ITEM >> 20} MB: the JSON is broken"
                )
            more = handle.read(BLOCK)
            if not more:
                if _TRAILING_COMMA.search(buffer, start):
                    raise msgspec.DecodeError(
                        "a comma after the last item of the data array: not JSON as the Logs "
                        "API writes it (edited by hand?)"
                    )
                raise msgspec.DecodeError("the file ends inside the data array (truncated)")
            kept = start - 1
            del buffer[:kept]  # cheap: a bytearray drops its head without copying
            buffer += more
            start, search, careful_until = start - kept, search - kept, careful_until - kept
            continue
        assert items is not None
        yield items
        after = _ITEM_END.match(buffer, end)
        assert after is not None
        if buffer[after.end() - 1] == ord("]"):
            _check_tail(bytes(buffer[after.end() :]), handle)
            return
        start = search = after.end() - 1


def _decode_in_place(
    buffer: bytearray, start: int, end: int, decode_run: Callable[[memoryview], list[Item]]
) -> list[Item]:
    """decode_run of `[` + the items from `start` to the `}` at `end` + `]`, without copying:
    the separators on either side are swapped for brackets during the call."""
    before, after = buffer[start - 1], buffer[end + 1]
    buffer[start - 1], buffer[end + 1] = 0x5B, 0x5D  # "[", "]"
    view = memoryview(buffer)
    piece = view[start - 1 : end + 2]
    try:
        return decode_run(piece)
    finally:
        piece.release()
        view.release()
        buffer[start - 1], buffer[end + 1] = before, after


def _last_item_ends(buffer: bytearray, start: int, count: int) -> list[int]:
    """Up to `count` positions, last first, of a `}` after `start` followed by `,{` or `]`."""
    ends: list[int] = []
    position = len(buffer)
    while len(ends) < count and (position := buffer.rfind(b"}", start, position)) >= 0:
        if _ITEM_END.match(buffer, position):
            ends.append(position)
    return ends


def _check_tail(tail: bytes, handle: BinaryIO) -> None:
    tail += handle.read(BLOCK)
    if tail.strip() != b"}" or handle.read(1):
        raise msgspec.DecodeError("the data array is not followed by a closing brace")
