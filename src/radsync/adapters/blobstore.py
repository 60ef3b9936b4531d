"""Immutable originals on disk: content-addressed, written once, never overwritten (ARCHITECTURE invariant 5).

**Keys are the SHA-256 of the bytes** (64 hex digits), stored as ``root/ab/abcd…``. Why content and not UIDs:

* a byte-identical re-send maps to the same key, so nothing is written twice and nothing can be overwritten;
* the same SOP Instance UID with *other* content lands under another key by itself: the original can never be
  replaced, and the newcomer is kept aside without a second storage area (FIELD-NOTES §20);
* a key verifies its file (``verify``), and is always a safe file name (no UID syntax, no path tricks);
* UIDs map to keys in the database; nothing on disk has to be renamed when radsync's view of a study changes.

**Writing** (``put``): the bytes go to a hidden temp file *in the destination directory* (same filesystem, so
the final step is atomic), then ``fsync``; the temp file is hard-linked to its final name -- ``link`` fails if
that name exists, so an existing file is never replaced -- then unlinked, and the directory is ``fsync``-ed so
the new name survives power loss. A crash at any point leaves either no file under the key or the complete
file; at worst a hidden ``.tmp-*`` file, which no reader sees and ``sweep_temporaries`` removes. On
filesystems without hard links the temp file is renamed instead, after checking the name is free (the only
writer of a key writes the same bytes, so that check cannot lose data). ``put_stream`` does the same with the
temp file in ``root/.tmp``, since the directory is known only once the hash is.

The 256 fan-out directories are made when the store opens, so a write never creates a directory (each new
directory would cost two more fsyncs); 10 million originals make about 40,000 files per directory, which ext4
and XFS index without trouble. A write costs two fsyncs (file, directory): the floor for durable-before-ack.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import time
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from radsync.domain.study import BlobRef

_KEY = re.compile(r"^[0-9a-f]{64}$")
_TEMP_PREFIX = ".tmp-"
_CHUNK = 1024 * 1024


class BlobStoreError(Exception):
    """The store cannot keep its promise (unknown key, a file under a key with the wrong size)."""


class FileBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._incoming = self.root / ".tmp"
        self._incoming.mkdir(parents=True, exist_ok=True)
        created = False
        for i in range(256):
            directory = self.root / f"{i:02x}"
            if not directory.is_dir():
                directory.mkdir(exist_ok=True)
                created = True
        if created:
            _fsync_directory(self.root)

    # -- writing ---------------------------------------------------------------------------------------------

    def put(self, data: bytes) -> BlobRef:
        """Store ``data`` under its SHA-256 and return its reference; storing it again writes nothing."""
        return self.put_reporting(data)[0]

    def put_reporting(self, data: bytes) -> tuple[BlobRef, bool]:
        """``put``, and whether this call created the file (so a caller that then refuses it may ``discard`` it)."""
        digest = hashlib.sha256(data).hexdigest()
        ref = BlobRef(digest, len(data), digest)
        final = self.path(digest)
        if self._already_there(final, ref):
            return ref, False
        temp = final.parent / f"{_TEMP_PREFIX}{secrets.token_hex(8)}"
        self._write(temp, (data,))
        self._publish(temp, final, ref)
        return ref, True

    def discard(self, key: str) -> None:
        """Remove a file this process just created and nothing indexes (a C-STORE refused after its write began).

        Only for that case: an original, once indexed, is never removed here.
        """
        self.path(key).unlink(missing_ok=True)

    def put_stream(self, chunks: Iterable[bytes]) -> BlobRef:
        """Store a stream without holding it in memory; the hash is computed while writing."""
        temp = self._incoming / f"{_TEMP_PREFIX}{secrets.token_hex(8)}"
        hasher = hashlib.sha256()
        size = 0

        def counted() -> Iterable[bytes]:
            nonlocal size
            for chunk in chunks:
                hasher.update(chunk)
                size += len(chunk)
                yield chunk

        self._write(temp, counted())
        digest = hasher.hexdigest()
        ref = BlobRef(digest, size, digest)
        final = self.path(digest)
        if self._already_there(final, ref):
            temp.unlink()
            return ref
        self._publish(temp, final, ref)
        return ref

    # -- reading ---------------------------------------------------------------------------------------------

    def path(self, key: str) -> Path:
        if not _KEY.match(key):
            raise BlobStoreError("not a blob key")
        return self.root / key[:2] / key

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def open(self, key: str) -> BinaryIO:
        try:
            return self.path(key).open("rb")
        except FileNotFoundError:
            raise BlobStoreError("no blob under that key") from None

    def read(self, key: str) -> bytes:
        with self.open(key) as handle:
            return handle.read()

    def verify(self, key: str) -> bool:
        """Whether the file under ``key`` still hashes to it (for a scrub job)."""
        hasher = hashlib.sha256()
        with self.open(key) as handle:
            while chunk := handle.read(_CHUNK):
                hasher.update(chunk)
        return hasher.hexdigest() == key

    def sweep_temporaries(self, older_than_seconds: float = 3600.0) -> int:
        """Remove temp files a crash left behind (only ones old enough that no writer can still own them)."""
        cutoff = time.time() - older_than_seconds
        removed = 0
        for temp in self.root.rglob(f"{_TEMP_PREFIX}*"):
            try:
                if temp.stat().st_mtime < cutoff:
                    temp.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    # -- internals -------------------------------------------------------------------------------------------

    def _already_there(self, final: Path, ref: BlobRef) -> bool:
        try:
            size = final.stat().st_size
        except FileNotFoundError:
            return False
        if size != ref.size:
            raise BlobStoreError(f"blob {ref.key} exists with another size; refusing to overwrite it")
        return True

    def _write(self, temp: Path, chunks: Iterable[bytes]) -> None:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)  # originals are read-only
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            temp.unlink(missing_ok=True)
            raise
        os.close(fd)

    def _publish(self, temp: Path, final: Path, ref: BlobRef) -> None:
        try:
            os.link(temp, final)
        except FileExistsError:
            pass  # a concurrent writer stored the same bytes first
        except OSError as error:
            if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            if not self._already_there(final, ref):
                os.rename(temp, final)
        temp.unlink(missing_ok=True)
        _fsync_directory(final.parent)
        if temp.parent != final.parent:
            _fsync_directory(temp.parent)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
