"""The header scan reads what pydicom's reader reads, on pydicom's own test files (charsets, implicit and explicit
VR, sequences of defined and undefined length), and leaves what it does not read to pydicom."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom import dcmread

from radsync.adapters.dicom.instance_header import (
    HEADER_TAGS,
    HeaderError,
    file_meta_bytes,
    header_from_dataset,
    read_header,
    scan_header,
)

DATA = Path(pydicom.__file__).parent / "data"
PART10 = sorted(p for p in [*(DATA / "test_files").rglob("*"), *(DATA / "charset_files").glob("*")]
                if p.is_file() and p.read_bytes()[128:132] == b"DICM")


def reference(file_bytes: bytes) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return header_from_dataset(
                dcmread(io.BytesIO(file_bytes), stop_before_pixels=True, specific_tags=HEADER_TAGS))
        except Exception as error:
            return type(error).__name__


def scanned(file_bytes: bytes) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = scan_header(file_bytes)
        if ds is None:
            return None
        try:
            return header_from_dataset(ds)
        except Exception as error:
            return type(error).__name__


def test_the_scan_reads_what_pydicom_reads_on_its_test_files() -> None:
    read = 0
    for path in PART10:
        data = path.read_bytes()
        got = scanned(data)
        if got is None:
            continue  # left to pydicom (big endian, deflated, ...)
        read += 1
        assert got == reference(data), path.name
    assert read >= 100, f"only {read} of {len(PART10)} files were scanned"


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_implicit.dcm", "chrH31.dcm", "chrX1.dcm"])
def test_a_received_data_set_behind_radsyncs_file_meta_is_read_alike(name: str) -> None:
    path = next(p for p in PART10 if p.name == name)
    ds = dcmread(path)
    raw = path.read_bytes()
    start = 144 + int.from_bytes(raw[140:144], "little")
    data = file_meta_bytes(ds.SOPClassUID, ds.SOPInstanceUID, str(ds.file_meta.TransferSyntaxUID), "CT01") + raw[start:]
    assert scanned(data) is not None
    assert scanned(data) == reference(data)


def test_what_the_scan_cannot_follow_is_left_to_pydicom() -> None:
    data = next(p for p in PART10 if p.name == "CT_small.dcm").read_bytes()
    assert scan_header(data[:100]) is None  # no File Meta
    assert scan_header(data[:395]) is None  # a value running past the end
    assert scan_header(data[:401]) is None  # a partial element header
    for cut in (395, 401):  # and read_header then answers as pydicom's reader does
        expected = reference(data[:cut])
        if isinstance(expected, str):
            with pytest.raises(HeaderError):
                read_header(data[:cut])
        else:
            assert read_header(data[:cut]) == expected
