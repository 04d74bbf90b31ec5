"""Image bytes jobhook holds (synchronous providers, mirrored images), under JOBHOOK_MEDIA_DIR.

Files live at `<media dir>/<job id>/<n>.<ext>`; the names are made here from a validated job id and
an index, never from anything a client or provider sends, so no path can leave the directory.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

from service import ids

EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}


@dataclasses.dataclass(frozen=True)
class MediaFile:
    file: str
    content_type: str
    bytes: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> MediaFile | None:
        if not isinstance(data, dict):
            return None
        return cls(str(data["file"]), str(data["content_type"]), int(data["bytes"]), str(data["sha256"]))


class MediaStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _folder(self, job_id: str) -> Path:
        if not ids.is_job_id(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        return self.root / job_id

    async def save(self, job_id: str, index: int, data: bytes, content_type: str) -> MediaFile:
        """Write durably (temporary file, fsync, rename, fsync the folder) before the DB says it exists."""
        return await asyncio.to_thread(self._save, job_id, index, data, content_type)

    def _save(self, job_id: str, index: int, data: bytes, content_type: str) -> MediaFile:
        folder = self._folder(job_id)
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{int(index)}.{EXTENSIONS.get(content_type, 'bin')}"
        temporary = folder / f".{name}.tmp"
        with temporary.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(folder / name)
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        return MediaFile(name, content_type, len(data), hashlib.sha256(data).hexdigest())

    def path(self, job_id: str, media: MediaFile) -> Path | None:
        """The file's path if it is there and inside the media directory; None otherwise."""
        folder = self._folder(job_id)
        candidate = (folder / media.file).resolve()
        if candidate.parent != folder.resolve() or not candidate.is_file():
            return None
        return candidate

    async def delete_job(self, job_id: str) -> int:
        """Remove a job's files; returns the bytes freed."""
        return await asyncio.to_thread(self._delete_job, job_id)

    def _delete_job(self, job_id: str) -> int:
        folder = self._folder(job_id)
        if not folder.is_dir():
            return 0
        freed = sum(path.stat().st_size for path in folder.iterdir() if path.is_file())
        shutil.rmtree(folder, ignore_errors=True)
        return freed
