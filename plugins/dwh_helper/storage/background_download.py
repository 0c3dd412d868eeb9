"""Read an S3 object while it is still downloading: parsing overlaps the transfer.

`BackgroundDownload` streams the object into a local file from a thread and hands out
a readable, seekable file object over it: a read past what has arrived waits for more
(or for the end), a seek back reads what is already on disk. The local file keeps
memory flat whatever the object's size.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import BinaryIO

from dwh_helper.storage.s3 import MB, ObjectStore

CHUNK = 1 * MB


class BackgroundDownload:
    """Download `key` to `path` in a thread; `open()` reads it as it arrives."""

    def __init__(self, store: ObjectStore, key: str, path: Path) -> None:
        self.store, self.key, self.path = store, key, Path(path)
        self.size = 0
        self.done = False
        self.error: BaseException | None = None
        self._cancelled = False
        self._changed = threading.Condition()
        self.path.touch()
        self._thread = threading.Thread(target=self._run, name="s3-download", daemon=True)

    def start(self) -> BackgroundDownload:
        """Start the transfer; returns self."""
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            body = self.store.open(self.key)
            with open(self.path, "wb") as target:
                for chunk in body.iter_chunks(CHUNK):
                    if self._cancelled:
                        break
                    target.write(chunk)
                    target.flush()
                    with self._changed:
                        self.size += len(chunk)
                        self._changed.notify_all()
        except BaseException as exc:  # handed to the reader
            self.error = exc
        finally:
            with self._changed:
                self.done = True
                self._changed.notify_all()

    def cancel(self) -> None:
        """Stop the transfer after the chunk in flight (the reader gave up)."""
        self._cancelled = True

    def wait_for(self, size: int) -> int:
        """Block until `size` bytes have arrived or the download ended; the bytes available."""
        with self._changed:
            while self.size < size and not self.done:
                self._changed.wait()
            if self.error is not None:
                raise self.error
            return self.size

    def join(self) -> None:
        """Wait for the transfer to end (re-raises its error)."""
        self._thread.join()
        if self.error is not None:
            raise self.error

    def open(self, buffer_size: int = CHUNK) -> BinaryIO:
        """A buffered binary reader over the object as it arrives (named after the key)."""
        reader = io.BufferedReader(_ArrivingFile(self), buffer_size)
        return reader  # type: ignore[return-value]


class _ArrivingFile(io.RawIOBase):
    """The raw side of `BackgroundDownload.open()`: reads wait for the bytes to arrive."""

    def __init__(self, download: BackgroundDownload) -> None:
        super().__init__()
        self._download = download
        self._file = open(download.path, "rb")  # noqa: SIM115 - closed in close()
        self.name = Path(download.key).name

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        position = self._file.tell()
        available = self._download.wait_for(position + 1)
        if available <= position:
            return 0  # the download ended: end of file
        return self._file.readinto(memoryview(buffer)[: available - position])

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_END:
            self._download.join()
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        self._file.close()
        super().close()
