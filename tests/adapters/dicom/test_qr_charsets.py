"""Q/R C-FIND answers in the calling AE's character set (findscu with -aet), as the worklist does per station."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from archive_samples import running_archive, sample
from pydicom import dcmread
from test_qr_find import DCMTK_ENV

FINDSCU, STORESCU = "/usr/bin/findscu", "/usr/bin/storescu"
pytestmark = pytest.mark.skipif(not os.path.exists(FINDSCU), reason="dcmtk is not installed")


def find_as(calling: str, port: int, out: Path, study_uid: str) -> tuple[bytes, object]:
    out.mkdir(parents=True)
    argv = [FINDSCU, "-S", "-aet", calling, "-aec", "RADSYNC", "-X", "-od", str(out),
            "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}", "-k", "PatientName",
            "-k", "StudyDescription", "127.0.0.1", str(port)]
    result = subprocess.run(argv, capture_output=True, text=True, env=DCMTK_ENV, timeout=60)
    assert result.returncode == 0, result.stderr
    (path,) = sorted(out.glob("rsp*.dcm"))
    return path.read_bytes(), dcmread(path)


def test_each_caller_gets_its_character_set(tmp_path: Path) -> None:
    settings = {
        "dicom_destinations": [{"ae_title": "OLDVIEW", "host": "127.0.0.1", "port": 11199, "charset": "ISO_IR 100"}],
        "stations": [{"ae_title": "CT_ASCII", "modality": "CT", "charset": "ASCII"}],
    }
    with running_archive(tmp_path / "data", **settings) as (_container, port):
        path = sample("CT_small.dcm", tmp_path / "m.dcm", name_value="Müller^Zoë")
        ds = dcmread(path)
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.PatientName = "Müller^Zoë"
        ds.StudyDescription = "Łódź knee"  # Ł and ó: Latin-1 carries ó, not Ł
        ds.save_as(path, enforce_file_format=True)
        stored = subprocess.run([STORESCU, "-aec", "RADSYNC", "127.0.0.1", str(port), str(path)],
                                capture_output=True, text=True, env=DCMTK_ENV, timeout=60)
        assert stored.returncode == 0, stored.stderr
        uid = str(ds.StudyInstanceUID)
        utf8_raw, utf8 = find_as("ANYONE", port, tmp_path / "utf8", uid)
        latin_raw, latin = find_as("OLDVIEW", port, tmp_path / "latin", uid)
        ascii_raw, plain = find_as("CT_ASCII", port, tmp_path / "ascii", uid)

    assert utf8.SpecificCharacterSet == "ISO_IR 192"
    assert "Müller^Zoë".encode() in utf8_raw and str(utf8.StudyDescription) == "Łódź knee"
    assert latin.SpecificCharacterSet == "ISO_IR 100"
    assert "Müller^Zoë".encode("latin-1") in latin_raw
    assert str(latin.PatientName) == "Müller^Zoë" and str(latin.StudyDescription) == "Lódz knee"
    assert "SpecificCharacterSet" not in plain  # the default repertoire
    assert str(plain.PatientName) == "MULLER^ZOE" and str(plain.StudyDescription) == "Lodz knee"
    assert b"MULLER^ZOE" in ascii_raw and "Müller".encode() not in ascii_raw
