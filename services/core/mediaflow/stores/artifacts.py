"""Artifact store: every stage's output under ``media/<media_id>/<name>``.

Backed by fsspec so the same code writes a local directory (default) or an
object store (``s3://bucket/prefix`` with s3fs installed). Writes go to a
temporary ``.part`` name next to the artifact and are then renamed into place, so
a crash or a full disk never leaves a half-written artifact that a resumed run
would trust; a full store raises ``ArtifactStoreFullError`` (retryable).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import fsspec
import fsspec.utils
from pydantic import BaseModel, ValidationError

from mediaflow.errors import ArtifactStoreFullError, MediaflowError

M = TypeVar("M", bound=BaseModel)
MEDIA_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{2,62}$")
# A write in progress (or one a killed process left behind): never an artifact.
PART_PATTERN = re.compile(r"\.[0-9a-f]{32}\.part(\.[^./]*)?$")
STORE_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def store_full_cause(exc: BaseException | None) -> OSError | None:
    """The ENOSPC/EDQUOT ``OSError`` behind ``exc`` (itself or in its cause/context chain,
    as fsspec backends may wrap it), or None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in STORE_FULL_ERRNOS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _fsync(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remote_options(uri: str) -> dict:
    """fsspec options for ``uri``: object stores without a listings cache. Other processes
    (the worker Job, the gateway's replicas) write and delete the same keys, and s3fs answers
    ``exists``/``info`` from a cached parent listing when it has one: a new artifact would
    stay missing, a deleted one present, for the life of the process."""
    protocol = fsspec.utils.get_protocol(uri)
    return {} if protocol in ("file", "local") else {"use_listings_cache": False}


def check_media_id(media_id: str) -> str:
    # Media ids become path components and Qdrant filters: keep them boring.
    if not MEDIA_ID_PATTERN.match(media_id):
        raise ValueError(f"invalid media id {media_id!r}")
    return media_id


class ArtifactStore:
    def __init__(self, root_uri: str):
        self.root_uri = root_uri.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.root_uri, **remote_options(self.root_uri))
        self.is_local = self.fs.protocol in ("file", ("file", "local")) or "file" in self.fs.protocol

    # -- paths -------------------------------------------------------------
    def _media_dir(self, media_id: str) -> str:
        return f"{self.root}/media/{check_media_id(media_id)}"

    def path(self, media_id: str, name: str) -> str:
        if "/" in name or name.startswith(".") or PART_PATTERN.search(name):
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
    # Every write goes to ``<artifact>.<hex>.part[<ext>]`` in the media's own directory and is
    # renamed into place once complete (fsync'd first, for local stores): the artifact's name
    # only ever holds a whole file. On any failure the .part is removed and the previous
    # artifact, if any, is left as it was; a full disk becomes ArtifactStoreFullError.
    def _part(self, target: str, suffix: str = "") -> str:
        return f"{target}.{uuid.uuid4().hex}.part{suffix}"

    @contextlib.contextmanager
    def _atomic(self, media_id: str, name: str, *, suffix: str = "", optional: bool = False) -> Iterator[str]:
        """A temporary path next to the artifact, renamed onto it when the block succeeds.

        ``optional``: a block that leaves no file at the temporary path stores nothing."""
        target = self.path(media_id, name)
        tmp = self._part(target, suffix)
        try:
            self.fs.makedirs(self._media_dir(media_id), exist_ok=True)
            yield tmp
            if optional and not self.fs.exists(tmp):
                return
            if self.is_local:
                os.replace(tmp, target)  # same directory, same filesystem: atomic
            else:
                self.fs.mv(tmp, target)
        except BaseException as exc:
            self._discard(tmp)
            full = None if isinstance(exc, MediaflowError) else store_full_cause(exc)
            if full is not None:
                reason = full.strerror or os.strerror(full.errno)
                raise ArtifactStoreFullError(
                    f"the artifact store is full: could not write media/{media_id}/{name} ({reason})"
                ) from exc
            raise

    def _discard(self, tmp: str) -> None:
        # Best effort (it may never have been created, a remote store may be unreachable):
        # the write's own error is the one worth reporting.
        with contextlib.suppress(Exception):
            if self.is_local:
                os.unlink(tmp)
            else:
                self.fs.rm_file(tmp)

    def write_bytes(self, media_id: str, name: str, data: bytes) -> str:
        with self._atomic(media_id, name) as tmp:
            if self.is_local:
                with open(tmp, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
            else:
                with self.fs.open(tmp, "wb") as fh:
                    fh.write(data)
        return self.path(media_id, name)

    def write_text(self, media_id: str, name: str, text: str) -> str:
        return self.write_bytes(media_id, name, text.encode("utf-8"))

    def write_model(self, media_id: str, name: str, record: BaseModel) -> str:
        return self.write_text(media_id, name, record.model_dump_json(indent=2))

    @contextlib.contextmanager
    def writing_file(self, media_id: str, name: str) -> Iterator[Path]:
        """A local path to write an artifact to (e.g. by ffmpeg), moved into place on success.

        Local stores hand out a .part name in the media's directory (it keeps the artifact's
        extension, which tools like ffmpeg go by): no copy, an atomic rename. Remote stores get
        a file in a local temp dir, uploaded to a .part key and moved. A writer that leaves no
        file stores nothing; an exception stores nothing and is re-raised."""
        suffix = Path(name).suffix
        if self.is_local:
            with self._atomic(media_id, name, suffix=suffix, optional=True) as tmp:
                yield Path(tmp)
                if os.path.exists(tmp):
                    _fsync(tmp)
            return
        with tempfile.TemporaryDirectory(prefix="mediaflow-") as staging:
            with self._atomic(media_id, name, optional=True) as tmp:
                local = Path(staging) / name
                yield local
                if local.exists():
                    self.fs.put_file(str(local), tmp)

    def put_file(self, media_id: str, name: str, local: Path) -> str:
        with self._atomic(media_id, name) as tmp:
            if self.is_local:
                shutil.copyfile(local, tmp)
                _fsync(tmp)
            else:
                self.fs.put_file(str(local), tmp)
        return self.path(media_id, name)

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
