"""Immutable originals on disk: content-addressed, written once, never overwritten (ARCHITECTURE invariant 5).

**Keys are the SHA-256 of the bytes** (64 hex digits), stored as ``root/ab/abcd…``. Why content and not UIDs:

* a byte-identical re-send maps to the same key, so nothing is written twice and nothing can be overwritten;
* the same SOP Instance UID with *other* content lands under another key by itself: the original can never be
  replaced, and the newcomer is kept aside without a second storage area (FIELD-NOTES §20);
* a key verifies its file (``verify``), and is always a safe file name (no UID syntax, no path tricks);
* UIDs map to keys in the database; nothing on disk has to be renamed when radsync's view of a study changes.

**Writing** (``put``): the bytes go to a hidden temp file *in the destination directory* (same filesystem), which
is hard-linked to its final name -- ``link`` fails if that name exists, so an existing file is never replaced --
and then the file and the directory are ``fsync``-ed **at the same time** (two threads; both have returned before
``put`` does), and the temp name is unlinked. Why not fsync, link, fsync the directory in turn: that is two fsync
latencies per C-STORE, and on one association every C-STORE waits for the previous one's status (on the shared
disk an fsync took 0.3-3.5 ms). The cost of publishing first: a crash before both fsyncs returned can leave the
final name on a file that is not complete. Nothing indexes it (the database row is written only after ``put``
returned) and no status was sent, and the temp name still links to the same inode: the next ``put`` of those
bytes finds the file does not hash to its key, sees the temp name beside it, and writes it anew. A file under a
key holding other bytes *without* such a temp name is damage to an original and is never replaced
(``BlobStoreError``). Every "already there" check hashes the existing file and fsyncs it (a concurrent writer of
the same bytes may still be syncing), so a key is reported stored only when a complete copy is durable. A crash
before the link leaves only a hidden ``.tmp-*`` file, which no reader sees and ``sweep_temporaries`` removes.
On filesystems without hard links the temp file is fsync-ed and renamed instead, after checking the name is free
(the only writer of a key writes the same bytes, so that check cannot lose data). ``put_stream`` fsyncs its temp
file in ``root/.tmp`` before linking (the directory is known only once the hash is).

The 256 fan-out directories are made when the store opens, so a write never creates a directory (each new
directory would cost two more fsyncs); 10 million originals make about 40,000 files per directory, which ext4
and XFS index without trouble. A write costs two fsyncs (file, directory), run concurrently: the floor for
durable-before-ack.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from radsync.domain.study import BlobRef

_KEY = re.compile(r"^[0-9a-f]{64}$")
_TEMP_PREFIX = ".tmp-"
_CHUNK = 1024 * 1024
_NO_HARD_LINKS = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK)
_SYNC_THREADS = 4  # directory fsyncs running while their files' fsyncs do


class BlobStoreError(Exception):
    """The store cannot keep its promise (unknown key, a file under a key with the wrong size)."""


class FileBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._syncer = ThreadPoolExecutor(_SYNC_THREADS, thread_name_prefix="blob-fsync")  # threads made on demand
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
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)  # originals are read-only
        try:
            _write_all(fd, data)
        except BaseException:
            os.close(fd)
            temp.unlink(missing_ok=True)
            raise
        try:
            os.link(temp, final)  # published before it is durable: see "Writing" in the module docstring
        except FileExistsError:  # a concurrent writer of the same bytes published first
            os.close(fd)
            temp.unlink(missing_ok=True)
            if self._already_there(final, ref):
                return ref, False
            raise BlobStoreError(f"blob {ref.key} vanished while being written") from None
        except OSError as error:
            if error.errno not in _NO_HARD_LINKS:
                os.close(fd)
                temp.unlink(missing_ok=True)
                raise
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self._publish(temp, final, ref)
            return ref, True
        except BaseException:
            os.close(fd)  # a crash here leaves only the temp file, which sweep_temporaries removes
            raise
        try:
            self._sync_file_and_directory(fd, final.parent)
        except BaseException:
            final.unlink(missing_ok=True)  # never durable, never indexed: not an original
            temp.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)
        temp.unlink()
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
        """Whether a complete, durable copy is under the key; a file left by an interrupted ``put`` is removed.

        A file under its key holding other bytes is either such a leftover (its temp name, same inode, is still
        beside it) or damage to an original, which is never replaced (BlobStoreError).
        """
        try:
            fd = os.open(final, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            complete = os.fstat(fd).st_size == ref.size and _sha256_of(fd) == ref.sha256
            if complete:
                self._sync_file_and_directory(fd, final.parent)  # a concurrent writer may not have synced yet
        finally:
            os.close(fd)
        if complete:
            return True
        if self._remove_interrupted(final):
            return False
        raise BlobStoreError(f"blob {ref.key} exists with other content; refusing to overwrite it")

    def _remove_interrupted(self, final: Path) -> bool:
        """Remove ``final`` if a temp name still links to it: a ``put`` stopped before its fsyncs returned."""
        try:
            inode = final.stat().st_ino
            leftovers = [e for e in os.scandir(final.parent)
                         if e.name.startswith(_TEMP_PREFIX) and e.inode() == inode]
        except FileNotFoundError:
            return True
        if not leftovers:
            return False
        final.unlink(missing_ok=True)
        for entry in leftovers:
            Path(entry.path).unlink(missing_ok=True)
        return True

    def _sync_file_and_directory(self, fd: int, directory: Path) -> None:
        """fsync the file and its directory at once (two threads): both durable when this returns."""
        directory_synced = self._syncer.submit(_fsync_directory, directory)
        try:
            os.fsync(fd)
        finally:
            directory_synced.result()

    def _write(self, temp: Path, chunks: Iterable[bytes]) -> None:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)  # originals are read-only
        try:
            for chunk in chunks:
                _write_all(fd, chunk)
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
            if error.errno not in _NO_HARD_LINKS:
                raise
            if not self._already_there(final, ref):
                os.rename(temp, final)
        temp.unlink(missing_ok=True)
        _fsync_directory(final.parent)
        if temp.parent != final.parent:
            _fsync_directory(temp.parent)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _sha256_of(fd: int) -> str:
    hasher = hashlib.sha256()
    while chunk := os.read(fd, _CHUNK):
        hasher.update(chunk)
    return hasher.hexdigest()


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
