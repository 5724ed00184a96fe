"""Artifact store: every stage's output under ``media/<media_id>/<name>``.

Backed by fsspec so the same code writes a local directory (default) or an
object store (``s3://bucket/prefix`` with s3fs installed). Writes go to a
temporary name first and are then moved into place, so a crash never leaves a
half-written artifact that a resumed run would trust.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import fsspec
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)
MEDIA_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{2,62}$")


def check_media_id(media_id: str) -> str:
    # Media ids become path components and Qdrant filters: keep them boring.
    if not MEDIA_ID_PATTERN.match(media_id):
        raise ValueError(f"invalid media id {media_id!r}")
    return media_id


class ArtifactStore:
    def __init__(self, root_uri: str):
        self.root_uri = root_uri.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.root_uri)
        self.is_local = self.fs.protocol in ("file", ("file", "local")) or "file" in self.fs.protocol

    # -- paths -------------------------------------------------------------
    def _media_dir(self, media_id: str) -> str:
        return f"{self.root}/media/{check_media_id(media_id)}"

    def path(self, media_id: str, name: str) -> str:
        if "/" in name or name.startswith("."):
            raise ValueError(f"invalid artifact name {name!r}")
        return f"{self._media_dir(media_id)}/{name}"

    def uri(self, media_id: str, name: str) -> str:
        path = self.path(media_id, name)
        return path if self.is_local else self.fs.unstrip_protocol(path)

    # -- reads ---------------------------------------------------------------
    def exists(self, media_id: str, name: str) -> bool:
        return self.fs.exists(self.path(media_id, name))

    def read_bytes(self, media_id: str, name: str) -> bytes:
        return self.fs.cat_file(self.path(media_id, name))

    def read_text(self, media_id: str, name: str) -> str:
        return self.read_bytes(media_id, name).decode("utf-8")

    def read_model(self, media_id: str, name: str, model: type[M]) -> M | None:
        """The artifact parsed as ``model``, or None when absent or invalid."""
        try:
            return model.model_validate_json(self.read_bytes(media_id, name))
        except (FileNotFoundError, ValidationError, ValueError):
            return None

    def open(self, media_id: str, name: str, mode: str = "rb"):
        return self.fs.open(self.path(media_id, name), mode)

    def size(self, media_id: str, name: str) -> int:
        return int(self.fs.size(self.path(media_id, name)))

    @contextlib.contextmanager
    def local_path(self, media_id: str, name: str) -> Iterator[Path]:
        """A local file with the artifact's content (a download for remote stores)."""
        if self.is_local:
            yield Path(self.path(media_id, name))
            return
        with tempfile.TemporaryDirectory(prefix="mediaflow-") as tmp:
            local = Path(tmp) / name
            self.fs.get_file(self.path(media_id, name), str(local))
            yield local

    # -- writes --------------------------------------------------------------
    def write_bytes(self, media_id: str, name: str, data: bytes) -> str:
        target = self.path(media_id, name)
        self.fs.makedirs(self._media_dir(media_id), exist_ok=True)
        tmp = f"{target}.{uuid.uuid4().hex}.part"
        with self.fs.open(tmp, "wb") as fh:
            fh.write(data)
        self.fs.mv(tmp, target)
        return target

    def write_text(self, media_id: str, name: str, text: str) -> str:
        return self.write_bytes(media_id, name, text.encode("utf-8"))

    def write_model(self, media_id: str, name: str, record: BaseModel) -> str:
        return self.write_text(media_id, name, record.model_dump_json(indent=2))

    @contextlib.contextmanager
    def writing_file(self, media_id: str, name: str) -> Iterator[Path]:
        """A local path to write an artifact to (e.g. by ffmpeg); moved in on success."""
        self.fs.makedirs(self._media_dir(media_id), exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="mediaflow-") as tmp:
            local = Path(tmp) / name
            yield local
            if self.is_local:
                shutil.move(str(local), self.path(media_id, name))
            else:
                self.fs.put_file(str(local), self.path(media_id, name))

    def put_file(self, media_id: str, name: str, local: Path) -> str:
        target = self.path(media_id, name)
        self.fs.makedirs(self._media_dir(media_id), exist_ok=True)
        self.fs.put_file(str(local), target)
        return target

    def delete(self, media_id: str, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.path(media_id, name))

    def delete_media(self, media_id: str) -> bool:
        media_dir = self._media_dir(media_id)
        if not self.fs.exists(media_dir):
            return False
        self.fs.rm(media_dir, recursive=True)
        return True

    def list_media(self) -> list[str]:
        base = f"{self.root}/media"
        if not self.fs.exists(base):
            return []
        names = [os.path.basename(p.rstrip("/")) for p in self.fs.ls(base, detail=False)]
        return sorted(n for n in names if MEDIA_ID_PATTERN.match(n))
