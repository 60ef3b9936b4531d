"""The blob store: content-addressed, atomic, never overwriting, crash-safe."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from radsync.adapters.blobstore import BlobStoreError, FileBlobStore


def visible_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".tmp-"))


def test_put_returns_a_content_key_and_reads_back_exactly(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    data = b"DICM" * 1000
    ref = store.put(data)
    assert ref.key == ref.sha256 == hashlib.sha256(data).hexdigest() and ref.size == len(data)
    assert store.read(ref.key) == data
    with store.open(ref.key) as handle:
        assert handle.read(4) == b"DICM"
    assert store.path(ref.key).relative_to(tmp_path).parts == (ref.key[:2], ref.key)
    assert store.verify(ref.key)


def test_a_resend_writes_nothing_and_the_original_file_is_untouched(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    ref = store.put(b"same bytes")
    before = os.stat(store.path(ref.key))
    assert store.put(b"same bytes") == ref
    after = os.stat(store.path(ref.key))
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    assert len(visible_files(tmp_path)) == 1


def test_other_content_gets_another_key_so_nothing_is_ever_overwritten(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    first, second = store.put(b"original"), store.put(b"edited")
    assert first.key != second.key
    assert (store.read(first.key), store.read(second.key)) == (b"original", b"edited")


def test_originals_are_read_only(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    ref = store.put(b"x")
    assert os.stat(store.path(ref.key)).st_mode & 0o222 == 0


def test_a_crash_between_write_and_rename_leaves_no_visible_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileBlobStore(tmp_path)
    seen: list[tuple[str, str]] = []

    def crash(src, dst):  # type: ignore[no-untyped-def]
        seen.append((os.path.dirname(src), os.path.dirname(dst)))
        raise KeyboardInterrupt("power cut")  # not an OSError: nothing may catch it

    monkeypatch.setattr(os, "link", crash)
    with pytest.raises(KeyboardInterrupt):
        store.put(b"half written?")
    monkeypatch.undo()
    key = hashlib.sha256(b"half written?").hexdigest()
    assert seen and seen[0][0] == seen[0][1]  # the temp file sat in the destination directory
    assert not store.exists(key)
    assert visible_files(tmp_path) == []
    with pytest.raises(BlobStoreError):
        store.read(key)
    assert store.put(b"half written?").key == key  # the retry after restart succeeds
    assert store.sweep_temporaries(older_than_seconds=-1) == 1  # and the leftover is swept
    assert [p.name for p in visible_files(tmp_path)] == [key]


def test_a_crash_while_writing_leaves_no_file_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FileBlobStore(tmp_path)

    def fail(fd):  # type: ignore[no-untyped-def]
        raise OSError(5, "I/O error")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError):
        store.put(b"never durable")
    monkeypatch.undo()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_without_hard_links_it_renames_and_still_never_overwrites(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileBlobStore(tmp_path)

    def unsupported(src, dst):  # type: ignore[no-untyped-def]
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", unsupported)
    ref = store.put(b"on a FUSE mount")
    assert store.read(ref.key) == b"on a FUSE mount"
    assert store.put(b"on a FUSE mount") == ref
    assert len(visible_files(tmp_path)) == 1


def test_put_stream_hashes_while_writing(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    chunks = [b"a" * 100_000, b"b" * 50_000, b""]
    ref = store.put_stream(iter(chunks))
    assert ref == store.put(b"".join(chunks))
    assert store.read(ref.key) == b"".join(chunks)
    assert store.put_stream([b"a" * 100_000, b"b" * 50_000]) == ref
    assert visible_files(tmp_path) == [store.path(ref.key)]


def test_a_file_with_the_wrong_size_under_a_key_is_never_replaced(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    ref = store.put(b"good")
    path = store.path(ref.key)
    path.chmod(0o644)
    path.write_bytes(b"bitrot!")
    with pytest.raises(BlobStoreError):
        store.put(b"good")
    assert path.read_bytes() == b"bitrot!" and not store.verify(ref.key)


def test_keys_are_checked_so_no_path_can_escape_the_store(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    for bad in ("../../etc/passwd", "ab", "G" * 64):
        with pytest.raises(BlobStoreError):
            store.path(bad)


def test_put_reports_whether_it_created_the_file_and_discard_removes_only_that(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    ref, created = store.put_reporting(b"refused after writing")
    assert created and store.exists(ref.key)
    assert store.put_reporting(b"refused after writing") == (ref, False)
    store.discard(ref.key)
    assert not store.exists(ref.key) and visible_files(tmp_path) == []
    store.discard(ref.key)  # already gone: nothing to do


def test_a_file_left_by_a_put_interrupted_before_its_fsyncs_is_written_anew(tmp_path: Path) -> None:
    """Published before durable: after a crash the name may hold a partial file, still linked from its temp name."""
    store = FileBlobStore(tmp_path)
    data = b"complete content" * 100
    key = hashlib.sha256(data).hexdigest()
    final = store.path(key)
    temp = final.parent / ".tmp-interrupted"
    temp.write_bytes(data[:100])  # what survived of the write
    os.link(temp, final)
    assert store.put_reporting(data) == (store.put(data), True)
    assert store.read(key) == data and store.verify(key)
    assert visible_files(tmp_path) == [final] and not temp.exists()


def test_other_bytes_of_the_same_size_under_a_key_are_never_taken_for_the_original(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    ref = store.put(b"good")
    path = store.path(ref.key)
    path.chmod(0o644)
    path.write_bytes(b"evil")
    with pytest.raises(BlobStoreError):
        store.put(b"good")
    assert path.read_bytes() == b"evil"
