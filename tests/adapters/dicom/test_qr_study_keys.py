"""Referring Physician's Name and Study ID over Q/R with dcmtk (storescu in, findscu / getscu out).

Referring Physician's Name belongs to the order (PV1-8, MAPPING.md §8): a matched study answers with its order's,
and a retrieved object carries it, the received value kept in the Original Attributes Sequence. Study ID is the
modality's own and is answered as received. Both are matching keys (not indexed; decided on the candidates).
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from pathlib import Path

import pytest
from archive_samples import HOSP, NOW, run, running_archive, sample
from pydicom import dcmread
from test_qr_find import DCMTK_ENV, findscu

from radsync.app.commands import PlaceOrder
from radsync.domain.ids import EntityId, Issuer, PatientId
from radsync.domain.names import PersonName
from radsync.domain.order import ImagingOrder, RequestedProcedure, ScheduledStep, Visit
from radsync.domain.patient import PatientUpdate

STORESCU, GETSCU = "/usr/bin/storescu", "/usr/bin/getscu"
pytestmark = pytest.mark.skipif(not os.path.exists(GETSCU), reason="dcmtk is not installed")


def place(container, accession: str, referring: str) -> None:  # type: ignore[no-untyped-def]
    order = ImagingOrder(
        patient_id=PatientId("P1", HOSP),
        accession=EntityId(accession),
        filler_number=EntityId(f"F-{accession}", Issuer("RIS")),
        visit=Visit(referring_physician=PersonName.from_canonical(referring)),
        procedures=(RequestedProcedure("RP1", "", description="exam", steps=(ScheduledStep("SPS1", "CT", NOW),)),),
    )
    update = PatientUpdate(order.patient_id, {"name": PersonName.from_canonical("Doe^Jane"),
                                              "birth_date": dt.date(1980, 3, 4)})
    run(container, lambda uow: container.orders.place(uow, PlaceOrder(update, order)))


def store(port: int, path: Path, accession: str, referring: str, study_id: str) -> str:
    ds = dcmread(sample("CT_small.dcm", path, accession=accession))
    ds.ReferringPhysicianName = referring
    ds.StudyID = study_id
    ds.save_as(path, enforce_file_format=True)
    result = subprocess.run([STORESCU, "-aec", "RADSYNC", "127.0.0.1", str(port), str(path)],
                            capture_output=True, text=True, env=DCMTK_ENV, timeout=60)
    assert result.returncode == 0, result.stderr
    return str(ds.StudyInstanceUID)


def test_referring_physician_and_study_id_are_answered_matched_and_applied_on_retrieve(tmp_path: Path) -> None:
    with running_archive(tmp_path / "data") as (container, port):
        place(container, "ACC-R", "Jones^Alice^^Dr")
        matched = store(port, tmp_path / "m.dcm", "ACC-R", "Typo^Referer", "S42")
        unassigned = store(port, tmp_path / "u.dcm", "NO-SUCH-ORDER", "Smith^Ann", "S77")
        keys = ("QueryRetrieveLevel=STUDY", "StudyInstanceUID", "ReferringPhysicianName", "StudyID")

        answers = {str(a.StudyInstanceUID): a for a in findscu(port, tmp_path / "all", *keys)}
        assert str(answers[matched].ReferringPhysicianName) == "Jones^Alice^^Dr"  # the order's, not the header's
        assert answers[matched].StudyID == "S42"
        assert str(answers[unassigned].ReferringPhysicianName) == "Smith^Ann"  # unassigned: as received
        assert answers[unassigned].StudyID == "S77"

        by_name = findscu(port, tmp_path / "jones", *keys, "ReferringPhysicianName=jones*")
        assert [str(a.StudyInstanceUID) for a in by_name] == [matched]
        assert findscu(port, tmp_path / "typo", *keys, "ReferringPhysicianName=Typo*") == []
        by_id = findscu(port, tmp_path / "s77", *keys, "StudyID=S77")
        assert [str(a.StudyInstanceUID) for a in by_id] == [unassigned]

        out = tmp_path / "get"
        out.mkdir()
        result = subprocess.run([GETSCU, "-S", "-aec", "RADSYNC", "-od", str(out), "-k", "QueryRetrieveLevel=STUDY",
                                 "-k", f"StudyInstanceUID={matched}", "127.0.0.1", str(port)],
                                capture_output=True, text=True, env=DCMTK_ENV, timeout=60)
        assert result.returncode == 0, result.stderr
        (retrieved,) = [dcmread(p) for p in out.iterdir()]
    assert str(retrieved.ReferringPhysicianName) == "Jones^Alice^^Dr"
    original = retrieved.OriginalAttributesSequence[-1].ModifiedAttributesSequence[0]
    assert str(original.ReferringPhysicianName) == "Typo^Referer"
    assert retrieved.StudyID == "S42"


def test_a_study_whose_order_names_no_referring_physician_keeps_the_received_one(tmp_path: Path) -> None:
    with running_archive(tmp_path / "data") as (container, port):
        place(container, "ACC-N", "")
        uid = store(port, tmp_path / "n.dcm", "ACC-N", "Received^Name", "S1")
        (answer,) = findscu(port, tmp_path / "f", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={uid}",
                            "ReferringPhysicianName")
    assert str(answer.ReferringPhysicianName) == "Received^Name"  # nothing known is blanked on the way out
