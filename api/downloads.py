"""Downloads built in a temporary directory that is removed after the response, whatever happens."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from starlette.background import BackgroundTask
from starlette.responses import FileResponse
from starlette.types import Receive, Scope, Send

log = logging.getLogger(__name__)


def remove_dir(path: Path) -> None:
    """Delete a work directory (no error when it is gone already)."""
    shutil.rmtree(path, ignore_errors=True)


class WorkDirFileResponse(FileResponse):
    """A file download whose work directory is deleted after sending, also on disconnect."""

    def __init__(self, path: Path, workdir: Path, *, filename: str, media_type: str) -> None:
        super().__init__(
            path,
            filename=filename,
            media_type=media_type,
            background=BackgroundTask(remove_dir, workdir),
        )
        self.workdir = workdir

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            remove_dir(self.workdir)


@contextmanager
def work_dir(prefix: str) -> Iterator[Path]:
    """A fresh temporary directory, removed if the block fails (the response removes it else)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    except BaseException:
        remove_dir(path)
        raise


def zip_entry(name: str) -> zipfile.ZipInfo:
    """A deflated ZIP entry named `name`, stamped with the current time."""
    entry = zipfile.ZipInfo(name, date_time=time.localtime()[:6])
    entry.compress_type = zipfile.ZIP_DEFLATED
    return entry
