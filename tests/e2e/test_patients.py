"""The patient-identity model end to end (issue 5 items 1, 2, 5 and ADT A08 out), on SQLite and PostgreSQL.

ADT and ORM messages go to the real MLLP listener through python-hl7's MLLPClient; the effects are checked with
dcmtk's findscu (Modality Worklist -W and Study Root Q/R), images are sent with pynetdicom's C-STORE to the real
DICOM listener, the history and corrections go through the HTTP API, and ADT^A08 out arrives at a real MLLP
receiver (tests/adapters/outbox/receiver.py) standing in for the RIS.
"""

from __future__ import annotations

import io
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hl7
import httpx
import pytest
from hl7.client import MLLPClient
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, ModalityPerformedProcedureStep  # type: ignore[attr-defined]
from sqlalchemy import text

from radsync.adapters.dicom.server import DicomServer
from radsync.adapters.hl7.intake import Hl7Intake
from radsync.adapters.hl7.server import Hl7Server
from radsync.bootstrap import Container, build_container
from radsync.clock import utc_now
from radsync.config import Settings, load_settings
from tests.adapters.dicom.qr_archive import dicom_file
from tests.adapters.hl7.test_hl7_loopback import LoopThread
from tests.adapters.outbox.receiver import Receiver, wait_until
from tests.adapters.outbox.support import FAST
from tests.e2e.test_results_out import Api

FINDSCU, GETSCU = "/usr/bin/findscu", "/usr/bin/getscu"
needs_dcmtk = pytest.mark.skipif(not os.path.exists(FINDSCU), reason="dcmtk is not installed")
ROOT = "1.2.826.0.1.3680043.10.5050"


def orm(patient: str, name: str, accession: str, control_id: str, msh7: str = "20240611090000",
        birth: str = "19700412") -> str:
    n = accession
    return "\r".join([
        f"MSH|^~\\&|HIS|GENHOSP|RADSYNC|RADDEPT|{msh7}||ORM^O01|{control_id}|P|2.3.1",
        f"PID|1||{patient}^^^GENHOSP^MR||{name}||{birth}|F",
        "PV1|1|O|RADOPD^X1^^GENHOSP",
        f"ORC|NW|PLC{n}^HIS|FIL{n}^RIS||SC||1^once^^20240612083000^^R||20240611093010",
        f"OBR|1|PLC{n}^HIS|FIL{n}^RIS|71250^CT thorax^C4||||||||||||||"
        f"{accession}|RP{n}|SPS{n}||||CT|||1^once^^20240612083000^^R",
    ]) + "\r"


def adt(event: str, patient: str, name: str, control_id: str, *, msh7: str, evn2: str = "",
        prior: str | None = None, structure: str = "ADT_A01") -> str:
    segments = [
        f"MSH|^~\\&|ADT|GENHOSP|RADSYNC|RADDEPT|{msh7}||ADT^{event}^{structure}|{control_id}|P|2.5.1",
        f"EVN|{event}|{evn2}",
        f"PID|1||{patient}^^^GENHOSP^MR||{name}||19700412|F",
    ]
    if prior is not None:
        segments.append(f"MRG|{prior}^^^GENHOSP^MR")
    segments.append("PV1|1|O")
    return "\r".join(segments) + "\r"


class PatientApi(Api):
    def patch(self, url: str, **kwargs: Any) -> httpx.Response:
        return self._loop.run(self._client.patch(url, **kwargs))  # type: ignore[no-any-return]


@dataclass
class Site:
    container: Container
    ris: Receiver
    http: PatientApi
    hl7_port: int
    dicom_port: int
    tmp: Path

    def send(self, message: str) -> hl7.Message:
        with MLLPClient("127.0.0.1", self.hl7_port) as client:
            answer = client.send_message(message.encode("utf-8"))
        return hl7.parse(answer.removeprefix(b"\x0b").removesuffix(b"\x1c\r").decode("utf-8"))

    def accepted(self, message: str) -> None:
        ack = self.send(message)
        assert str(ack.segment("MSA")[1]) == "AA", str(ack)

    def mwl(self, *keys: str) -> list[Dataset]:
        return self._findscu(["-W", "-aet", "CT01"], ("PatientID", "PatientName", "AccessionNumber",
                                                      "ScheduledProcedureStepSequence[0].Modality=CT", *keys))

    def qr(self, *keys: str) -> list[Dataset]:
        return self._findscu(["-S"], ("QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientID", "PatientName",
                                      "AccessionNumber", *keys))

    def _findscu(self, mode: list[str], keys: tuple[str, ...]) -> list[Dataset]:
        out = self.tmp / "answers"
        out.mkdir(exist_ok=True)
        for old in out.glob("rsp*.dcm"):
            old.unlink()
        argv = [FINDSCU, *mode, "-aec", "RADSYNC", "-X", "-od", str(out)]
        for key in keys:
            argv += ["-k", key]
        done = subprocess.run([*argv, "127.0.0.1", str(self.dicom_port)], capture_output=True, text=True,
                              timeout=60, env={**os.environ, "TCP_NODELAY": "1"})
        assert done.returncode == 0, done.stderr
        return [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]

    def store(self, study: str, patient_id: str, name: str, accession: str = "", date: str = "20240612") -> int:
        data = dicom_file("CT_small.dcm", study=study, series=f"{study}.1", sop=f"{study}.1.1",
                          patient_id=patient_id, issuer="", name=name, accession=accession, study_date=date)
        path = self.tmp / f"{study}.dcm"
        ds = dcmread(io.BytesIO(data))
        ds.PatientBirthDate = "19700412"
        ds.save_as(path, enforce_file_format=True)
        ae = AE(ae_title="CT01")
        ae.add_requested_context(CTImageStorage, dcmread(path).file_meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", self.dicom_port, ae_title="RADSYNC")
        assert assoc.is_established
        try:
            return int(assoc.send_c_store(path).Status)
        finally:
            assoc.release()

    def get(self, study: str) -> list[Dataset]:
        """C-GET the study with dcmtk's getscu; the objects as they left radsync."""
        out = self.tmp / "retrieved"
        out.mkdir(exist_ok=True)
        for old in out.iterdir():
            old.unlink()
        done = subprocess.run([GETSCU, "-S", "-aec", "RADSYNC", "-od", str(out), "-k", "QueryRetrieveLevel=STUDY",
                               "-k", f"StudyInstanceUID={study}", "127.0.0.1", str(self.dicom_port)],
                              capture_output=True, text=True, timeout=60, env={**os.environ, "TCP_NODELAY": "1"})
        assert done.returncode == 0, done.stderr
        return [dcmread(p) for p in sorted(out.iterdir())]

    def mpps_in_progress(self, uid: str, patient_id: str) -> None:
        """N-CREATE an unscheduled MPPS (no Scheduled Step Attributes naming an order) for ``patient_id``."""
        ae = AE(ae_title="CT01")
        ae.add_requested_context(ModalityPerformedProcedureStep)
        assoc = ae.associate("127.0.0.1", self.dicom_port, ae_title="RADSYNC")
        assert assoc.is_established
        try:
            item = Dataset()
            item.StudyInstanceUID, item.AccessionNumber = f"{uid}.9", ""
            item.RequestedProcedureID = item.ScheduledProcedureStepID = ""
            item.ReferencedStudySequence = Sequence()
            create = Dataset()
            create.ScheduledStepAttributesSequence = Sequence([item])
            create.PatientID, create.PatientName = patient_id, "Rossi^Maria"
            create.PerformedProcedureStepID, create.PerformedStationAETitle, create.Modality = "PPS1", "CT01", "CT"
            create.PerformedProcedureStepStartDate, create.PerformedProcedureStepStartTime = "20240612", "083000"
            create.PerformedProcedureStepStatus = "IN PROGRESS"
            create.PerformedProcedureStepEndDate = create.PerformedProcedureStepEndTime = ""
            create.PerformedSeriesSequence = Sequence()
            status, _ = assoc.send_n_create(create, ModalityPerformedProcedureStep, uid)
            assert status.Status == 0
        finally:
            assoc.release()

    def mpps_state(self, uid: str) -> tuple[str, str]:
        with self.container.engines.read.connect() as conn:
            row = conn.execute(text("SELECT state, patient_id FROM mpps WHERE sop_instance_uid = :u"), {"u": uid}).one()
        return str(row.state), str(row.patient_id)

    def study_state(self, uid: str) -> str:
        response = self.http.get(f"/api/studies/{uid}")
        assert response.status_code == 200, response.text
        return str(response.json()["state"])

    def history(self, patient_id: str) -> dict:  # type: ignore[type-arg]
        response = self.http.get(f"/api/patients/{patient_id}/history")
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def sent(self, message_type: str) -> list[hl7.Message]:
        """Messages the RIS stand-in received of ``message_type``, once at least one arrived."""
        wait_until(lambda: any(message_type in m for m in self.ris.messages), 10, what=message_type)
        return [hl7.parse(m) for m in self.ris.messages if message_type in m]

    def flags(self, control_id: str) -> str:
        with self.container.engines.read.connect() as conn:
            return str(conn.execute(text("SELECT flags FROM message_log WHERE control_id = :c"),
                                    {"c": control_id}).scalar_one())


@contextmanager
def running(settings: Settings, ris: Receiver, tmp_path: Path) -> Iterator[Site]:
    """The MLLP, DICOM and HTTP sides of radsync with a fresh container (as ``radsync serve`` builds them)."""
    container = build_container(settings)
    container.outbox.start()
    intake = Hl7Intake(settings, container.engines, container.orders, utc_now, outbound=container.outbound)
    intake.start()
    loop = LoopThread()
    server = Hl7Server(intake, "127.0.0.1", 0, max_message_bytes=64 * 1024)
    port = loop.run(server.start())
    dicom = DicomServer(settings, container.engines, container)
    dicom_port = dicom.start()
    http = PatientApi(container, loop)
    try:
        yield Site(container, ris, http, port, dicom_port, tmp_path)
    finally:
        http.close()
        dicom.stop()
        loop.run(server.stop())
        intake.stop()
        loop.close()
        container.outbox.stop()
        container.engines.dispose()


@pytest.fixture
def site(tmp_path: Path, database_url: str) -> Iterator[Site]:
    ris = Receiver().start()
    destination = {"name": "ris", "host": "127.0.0.1", "port": ris.port, "events": ["patient"], **FAST}
    settings = load_settings(None, {
        "data_dir": tmp_path / "data", "database_url": database_url, "hl7_destinations": [destination],
        "timezone": "Europe/Berlin", "dicom_port": 0, "dicom_processes": 1,
        "stations": [{"ae_title": "CT01", "modality": "CT"}],
    })
    try:
        with running(settings, ris, tmp_path) as site:
            yield site
    finally:
        ris.close()


@needs_dcmtk
def test_an_older_update_arriving_late_does_not_roll_the_patient_back(site: Site) -> None:
    site.accepted(orm("P1", "Doe^Jane", "ACC1", "O1", msh7="20240611090000"))
    # newer (EVN-2 12:00) first, older (no EVN-2, MSH-7 11:00) second
    site.accepted(adt("A08", "P1", "Doe^Janet", "A1", msh7="20240611120500", evn2="20240611120000"))
    site.accepted(adt("A08", "P1", "Doe^Old", "A2", msh7="20240611110000"))
    [item] = site.mwl("PatientID=P1")
    assert str(item.PatientName) == "Doe^Janet"
    # an ORM whose MSH-7 is older still places its order, but leaves the demographics alone
    site.accepted(orm("P1", "Doe^Older", "ACC2", "O2", msh7="20240611100000"))
    assert {str(i.PatientName) for i in site.mwl("PatientID=P1")} == {"Doe^Janet"}
    # the PID of an order update (XO) follows the same rule: older ignored, newer applied
    site.accepted(orm("P1", "Doe^Xo", "ACC1", "X1", msh7="20240611113000").replace("ORC|NW|", "ORC|XO|"))
    assert {str(i.PatientName) for i in site.mwl("PatientID=P1")} == {"Doe^Janet"}
    site.accepted(orm("P1", "Doe^Newest", "ACC1", "X2", msh7="20240611130000").replace("ORC|NW|", "ORC|XO|"))
    assert {str(i.PatientName) for i in site.mwl("PatientID=P1")} == {"Doe^Newest"}

    history = site.history("P1")["history"]
    kinds = [e["kind"] for e in history]
    assert kinds == ["patient.created", "demographics.updated", "demographics.stale", "demographics.stale",
                     "demographics.stale", "demographics.updated"]
    updated = history[1]
    assert updated["old"]["name"] == "Doe^Jane" and updated["new"]["name"] == "Doe^Janet"
    assert updated["by"]["control_id"] == "A1" and updated["by"]["sender"] == "ADT^GENHOSP"
    assert updated["source_time"] == "2024-06-11T12:00:00"
    assert history[2]["by"]["control_id"] == "A2" and "name" in history[2]["new"]["ignored"]


@needs_dcmtk
def test_merge_moves_orders_and_images_and_later_images_under_the_old_id_attach_to_the_survivor(
    site: Site,
) -> None:
    site.accepted(orm("TMP42", "Trauma^Female", "ACC-T", "O1"))
    site.accepted(orm("P2", "Rossi^Maria", "ACC-S", "O2"))
    # images under the temporary ID, no accession, a year before any order: unassigned, keyed by the received ID
    assert site.store(f"{ROOT}.1", "TMP42", "Trauma^Female", date="20230101") == 0
    assert site.study_state(f"{ROOT}.1") == "unassigned"
    assert [a.StudyInstanceUID for a in site.qr("PatientID=TMP42")] == [f"{ROOT}.1"]

    merge = adt("A40", "P2", "Rossi^Maria", "M1", msh7="20240611160000", prior="TMP42", structure="ADT_A39")
    site.accepted(merge)
    items = site.mwl("PatientID=P2")
    assert sorted(i.AccessionNumber for i in items) == ["ACC-S", "ACC-T"]
    assert {str(i.PatientName) for i in items} == {"Rossi^Maria"}
    assert site.mwl("PatientID=TMP42") == []
    assert [a.StudyInstanceUID for a in site.qr("PatientID=P2")] == [f"{ROOT}.1"]
    assert site.qr("PatientID=TMP42") == []
    [retrieved] = site.get(f"{ROOT}.1")  # still unassigned, but what leaves radsync names the survivor
    assert retrieved.PatientID == "P2"
    assert retrieved.OriginalAttributesSequence[-1].ModifiedAttributesSequence[0].PatientID == "TMP42"
    [a40] = site.sent("ADT^A40")  # the merge goes on to destinations subscribed to "patient"
    assert str(a40.segment("PID")[3][0][0]) == "P2" and str(a40.segment("MRG")[1][0][0]) == "TMP42"

    # a C-STORE under the old identifier, naming the moved order: reconciled normally to the survivor
    assert site.store(f"{ROOT}.2", "TMP42", "Rossi^Maria", accession="ACC-T") == 0
    assert site.study_state(f"{ROOT}.2") == "matched"
    [found] = site.qr("AccessionNumber=ACC-T")
    assert found.PatientID == "P2" and str(found.PatientName) == "Rossi^Maria"
    # an order arriving later under the old identifier lands on the survivor too
    site.accepted(orm("TMP42", "Trauma^Female", "ACC-L", "O3", msh7="20240611170000"))
    assert "ACC-L" in {i.AccessionNumber for i in site.mwl("PatientID=P2")}

    # the alias resolves to the survivor in the API, and the history says what happened
    body = site.history("TMP42")
    assert body["patient_id"] == "P2" and body["resolved_from"]["patient_id"] == "TMP42"
    merged = [e for e in body["history"] if e["kind"] == "merge"]
    assert len(merged) == 1 and merged[0]["old"]["prior"] == "TMP42^^^GENHOSP"
    assert merged[0]["new"]["moved"]["orders"] == 1 and merged[0]["new"]["moved"]["studies"] == 1
    assert merged[0]["by"]["control_id"] == "M1"

    # a repeated identical merge is a no-op (AA); the reverse is refused (AE 205) and flagged
    site.accepted(merge.replace("|M1|", "|M2|"))
    reverse = adt("A40", "TMP42", "Trauma^Female", "M3", msh7="20240611180000", prior="P2", structure="ADT_A39")
    ack = site.send(reverse)
    assert str(ack.segment("MSA")[1]) == "AE" and "205" in str(ack.segment("ERR"))
    assert "reversed-merge" in site.flags("M3")
    assert sorted(i.AccessionNumber for i in site.mwl("PatientID=P2")) == ["ACC-L", "ACC-S"]  # ACC-T was imaged
    assert site.mwl("PatientID=TMP42") == []


def test_bad_merges_are_answered_and_an_unknown_prior_records_only_the_alias(site: Site) -> None:
    same = adt("A40", "P3", "Roe^Ann", "B1", msh7="20240611160000", prior="P3", structure="ADT_A39")
    ack = site.send(same)
    assert str(ack.segment("MSA")[1]) == "AE"
    assert "205" in str(ack.segment("ERR")) and "MRG^1^1^1^1" in str(ack.segment("ERR"))

    site.accepted(adt("A34", "P3", "Roe^Ann", "B2", msh7="20240611160000", prior="NEVER-SEEN", structure="ADT_A30"))
    body = site.history("NEVER-SEEN")
    assert body["patient_id"] == "P3"
    assert [a["patient_id"] for a in body["aliases"]] == ["NEVER-SEEN"]
    assert [e["kind"] for e in body["history"]] == ["patient.created", "alias.added"]
    assert site.http.get("/api/patients/NOBODY/history").status_code == 404
    assert site.http.get("/api/patients/NOBODY/history").json()["error"] == "unknown_patient"


@needs_dcmtk
def test_a47_changes_the_identifier_and_the_old_one_becomes_an_alias(site: Site) -> None:
    site.accepted(orm("OLD7", "Poe^Edgar", "ACC7", "O1"))
    site.accepted(adt("A47", "NEW7", "Poe^Edgar", "C1", msh7="20240611160000", prior="OLD7", structure="ADT_A30"))
    [item] = site.mwl("PatientID=NEW7")
    assert item.AccessionNumber == "ACC7"
    assert site.mwl("PatientID=OLD7") == []
    body = site.history("NEW7")
    assert body["resolved_from"] is None and [a["kind"] for a in body["aliases"]] == ["change_id"]
    assert body["history"][-1]["kind"] == "identifier.changed"
    [a47] = site.sent("ADT^A47")
    assert str(a47.segment("PID")[3][0][0]) == "NEW7" and str(a47.segment("MRG")[1][0][0]) == "OLD7"


@needs_dcmtk
def test_a_correction_through_the_api_is_audited_shown_at_once_and_sent_as_adt_a08(site: Site) -> None:
    site.accepted(orm("P5", "Smyth^Jon", "ACC5", "O1"))
    assert site.store(f"{ROOT}.5", "P5", "Smyth^Jon", accession="ACC5") == 0
    assert site.study_state(f"{ROOT}.5") == "matched"
    site.accepted(orm("P5", "Smyth^Jon", "ACC6", "O2"))  # still scheduled: on the worklist

    assert site.http.patch("/api/patients/P5", json={"name": "Smith^John"}).status_code == 422  # who?
    response = site.http.patch("/api/patients/P5", json={"name": "Smith^John", "birth_date": "1970-04-13"},
                               headers={"X-Radsync-User": "alice"})
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "Smith^John"

    [item] = site.mwl("PatientID=P5")
    assert str(item.PatientName) == "Smith^John" and item.AccessionNumber == "ACC6"
    [study] = site.qr("PatientID=P5", "PatientBirthDate")
    assert str(study.PatientName) == "Smith^John" and study.PatientBirthDate == "19700413"
    body = site.http.get(f"/api/studies/{ROOT}.5").json()
    assert body["current_patient"]["name"] == "Smith^John" and body["current_patient"]["birth_date"] == "1970-04-13"
    assert body["as_received"]["patient"]["name"] == "Smyth^Jon"  # the study as received stays as it was

    last = site.history("P5")["history"][-1]
    assert last["kind"] == "demographics.updated" and last["by"] == {"user": "alice"}
    assert last["old"] == {"name": "Smyth^Jon", "birth_date": "1970-04-12"}
    assert last["new"] == {"name": "Smith^John", "birth_date": "1970-04-13"}

    [a08] = site.sent("ADT^A08")
    assert str(a08.segment("PID")[3][0][0]) == "P5" and str(a08.segment("PID")[5]) == "Smith^John"
    assert str(a08.segment("PID")[7]) == "19700413" and str(a08.segment("EVN")[1]) == "A08"
    assert str(a08.segment("MSH")[12]) == "2.5.1"


def test_an_unassigned_mpps_under_the_prior_id_is_reconciled_to_the_survivor_at_the_merge(site: Site) -> None:
    site.accepted(orm("P8", "Rossi^Maria", "ACC8", "O1"))
    site.mpps_in_progress(f"{ROOT}.8", "TMP8")
    assert site.mpps_state(f"{ROOT}.8") == ("unassigned", "TMP8")
    site.accepted(adt("A40", "P8", "Rossi^Maria", "M1", msh7="20240611160000", prior="TMP8", structure="ADT_A39"))
    assert site.mpps_state(f"{ROOT}.8") == ("matched", "P8")


def test_the_issuer_tells_apart_patients_sharing_an_id_and_bad_corrections_get_json_errors(site: Site) -> None:
    site.accepted(orm("P9", "Ames^Ann", "ACC9", "O1"))
    site.accepted(orm("P9", "Bell^Bea", "ACC10", "O2").replace("P9^^^GENHOSP^MR", "P9^^^OTHERHOSP^MR"))
    ambiguous = site.http.get("/api/patients/P9/history")
    assert ambiguous.status_code == 422 and ambiguous.json()["field"] == "patient.issuer"
    other = site.http.get("/api/patients/P9/history", params={"issuer": "OTHERHOSP"}).json()
    assert other["name"] == "Bell^Bea" and other["issuer"] == "OTHERHOSP"

    user = {"X-Radsync-User": "bob"}
    assert site.http.patch("/api/patients/NOBODY", json={"name": "X^Y"}, headers=user).status_code == 404
    empty = site.http.patch("/api/patients/P9", params={"issuer": "GENHOSP"}, json={}, headers=user)
    assert empty.status_code == 422 and empty.json()["error"] == "missing_value"
    assert site.http.patch("/api/patients/P9", params={"issuer": "GENHOSP"}, json={"sex": "X"},
                           headers=user).status_code == 422
    fixed = site.http.patch("/api/patients/P9", params={"issuer": "GENHOSP"}, json={"sex": "", "actor": "carol"})
    assert fixed.status_code == 200 and fixed.json()["sex"] == ""
    entry = site.http.get("/api/patients/P9/history", params={"issuer": "GENHOSP"}).json()["history"][-1]
    assert entry["by"] == {"user": "carol"} and entry["old"] == {"sex": "F"} and entry["new"] == {"sex": ""}
    assert site.ris.messages == [m for m in site.ris.messages if "ADT^A08" in m]  # only patient messages go out
