"""The DICOM server over loopback, with real peers: dcmtk's findscu -W and echoscu, and pynetdicom as an SCU.

The server (conftest ``dicom_server``) answers from the sample worklist, caps answers at 5 and knows three
stations: CT01 (UTF-8), LATIN1 (ISO_IR 100) and ASCII1 (ASCII).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset, dcmread, dcmwrite
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind, Verification
from worklist_samples import SERVER_SETTINGS  # helper module next to this file

from radsync.adapters.dicom.mwl import WorklistPolicy, worklist_service
from radsync.adapters.dicom.server import DicomServer
from radsync.adapters.dicom.status import Status
from radsync.adapters.persistence.engine import Engines
from radsync.adapters.persistence.worklist import SqlWorklistReader
from radsync.app.worklist import WorklistItem, WorklistQuery
from radsync.config import Settings

needs_dcmtk = pytest.mark.skipif(shutil.which("findscu") is None, reason="dcmtk is not installed")
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def mwl_query(**keys: Any) -> Dataset:
    """A query with the usual return keys; ``sps_*`` keywords go into the SPS item."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid values on purpose (wildcards, bad dates): what modalities send
        return _query(keys)


def _query(keys: dict[str, Any]) -> Dataset:
    ds = Dataset()
    sps = Dataset()
    for keyword in ("Modality", "ScheduledStationAETitle", "ScheduledProcedureStepStartDate",
                    "ScheduledProcedureStepStartTime", "ScheduledProcedureStepID"):
        setattr(sps, keyword, "")
    for keyword in ("PatientName", "PatientID", "AccessionNumber", "StudyInstanceUID"):
        setattr(ds, keyword, "")
    for keyword, value in keys.items():
        if keyword.startswith("sps_"):
            setattr(sps, keyword[4:], value)
        else:
            setattr(ds, keyword, value)
    ds.ScheduledProcedureStepSequence = Sequence([sps])
    return ds


class Scu:
    """pynetdicom as a modality: one association, C-FIND / C-ECHO / C-CANCEL."""

    def __init__(self, port: int, calling: str = "CT01", called: str = "RADSYNC", implicit_only: bool = False,
                 max_pdu: int = 16384) -> None:
        ae = AE(ae_title=calling)
        ae.maximum_pdu_size = max_pdu
        syntaxes = [ImplicitVRLittleEndian] if implicit_only else [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        ae.add_requested_context(ModalityWorklistInformationFind, syntaxes)
        ae.add_requested_context(Verification)
        self.assoc = ae.associate("127.0.0.1", port, ae_title=called)

    def find(self, query: Dataset, cancel_after: int | None = None) -> tuple[list[Dataset], list[int], Any]:
        answers: list[Dataset] = []
        statuses: list[int] = []
        final = None
        for status, identifier in self.assoc.send_c_find(query, ModalityWorklistInformationFind):
            if status.Status in (0xFF00, 0xFF01):
                answers.append(identifier)
                statuses.append(status.Status)
                if cancel_after is not None and len(answers) == cancel_after:
                    self.assoc.send_c_cancel(1, query_model=ModalityWorklistInformationFind)
            else:
                final = status
        return answers, statuses, final

    def close(self) -> None:
        if self.assoc.is_established:
            self.assoc.release()


@pytest.fixture
def scu_factory(dicom_server: tuple[DicomServer, int]) -> Iterator[Any]:
    made: list[Scu] = []

    def make(**kwargs: Any) -> Scu:
        scu = Scu(dicom_server[1], **kwargs)
        made.append(scu)
        return scu

    yield make
    for scu in made:
        scu.close()


# -- pynetdicom as SCU ---------------------------------------------------------------------------------------------


def test_c_echo(scu_factory: Any) -> None:
    scu = scu_factory()
    assert scu.assoc.is_established
    assert scu.assoc.send_c_echo().Status == Status.SUCCESS


def test_find_by_accession(scu_factory: Any) -> None:
    answers, statuses, final = scu_factory().find(mwl_query(AccessionNumber="A1003"))
    assert final.Status == Status.SUCCESS and statuses == [Status.PENDING]
    (ds,) = answers
    assert (ds.PatientID, ds.PatientName, ds.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID) == (
        "PID2", "Smythe^Jane", "SPS3")


def test_implicit_only_with_max_pdu_16000(scu_factory: Any) -> None:
    scu = scu_factory(implicit_only=True, max_pdu=16000)
    answers, _statuses, final = scu.find(mwl_query(sps_ScheduledStationAETitle="CT01",
                                                   sps_ScheduledProcedureStepStartDate="20240105"))
    assert final.Status == Status.SUCCESS
    assert sorted(a.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID for a in answers) == [
        "SPS1", "SPS11A", "SPS11B", "SPS3"]


def test_answers_larger_than_the_peers_pdu_are_fragmented(scu_factory: Any) -> None:
    answers, _statuses, final = scu_factory(max_pdu=256).find(mwl_query(AccessionNumber="A1011"))
    assert final.Status == Status.SUCCESS and len(answers) == 2


def test_utf8_query_matches_case_insensitively(scu_factory: Any) -> None:
    query = mwl_query(PatientName="müller*")
    query.SpecificCharacterSet = "ISO_IR 192"
    answers, _statuses, final = scu_factory().find(query)
    assert final.Status == Status.SUCCESS
    assert [a.PatientName for a in answers] == ["Müller^Zoë"]


def test_iso_ir_100_station_gets_latin1_bytes(scu_factory: Any) -> None:
    (ds,), _statuses, _final = scu_factory(calling="LATIN1").find(mwl_query(PatientID="PID3"))
    assert ds.get_item(0x00080005).value.rstrip() == b"ISO_IR 100"
    assert ds.get_item(0x00100010).value.startswith(bytes.fromhex("4D FC 6C 6C 65 72"))


def test_ascii_station_gets_muller_zoe(scu_factory: Any) -> None:
    (ds,), _statuses, _final = scu_factory(calling="ASCII1").find(mwl_query(PatientID="PID3"))
    assert "SpecificCharacterSet" not in ds
    assert ds.get_item(0x00100010).value.rstrip() == b"MULLER^ZOE"


def test_unknown_keys_give_pending_with_warning(scu_factory: Any) -> None:
    query = mwl_query(PatientID="PID1", QueryRetrieveLevel="WORKLIST")
    query.add_new(0x00091001, "LO", "private")
    answers, statuses, final = scu_factory().find(query)
    assert final.Status == Status.SUCCESS
    assert len(answers) == 4 and set(statuses) == {Status.PENDING_WARNING}
    assert "QueryRetrieveLevel" not in answers[0] and (0x0009, 0x1001) not in answers[0]


def test_more_matches_than_the_cap_end_with_out_of_resources(scu_factory: Any) -> None:
    answers, _statuses, final = scu_factory().find(mwl_query())
    assert len(answers) == 5
    assert final.Status == Status.OUT_OF_RESOURCES
    assert "more than 5 matches" in final.ErrorComment


def test_unreadable_identifier_is_refused_with_a900(scu_factory: Any) -> None:
    answers, _statuses, final = scu_factory().find(mwl_query(sps_ScheduledProcedureStepStartDate="tomorrow"))
    assert answers == [] and final.Status == Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    assert final.ErrorComment.startswith("ScheduledProcedureStepStartDate")


def test_wrong_called_ae_title_is_rejected(dicom_server: tuple[DicomServer, int]) -> None:
    scu = Scu(dicom_server[1], called="ANY-SCP")
    assert scu.assoc.is_rejected


# -- C-CANCEL and failures, on a server with a large (fake) worklist -------------------------------------------


class ManyItems:
    """A reader answering every query with the same items many times over."""

    def __init__(self, items: list[WorklistItem], copies: int) -> None:
        self.items = items * copies

    def find(self, query: WorklistQuery) -> list[WorklistItem]:
        return self.items


class Broken:
    def find(self, query: WorklistQuery) -> list[WorklistItem]:
        raise ConnectionError("database is down")


@pytest.fixture
def custom_server(sqlite_worklist: Engines) -> Iterator[Any]:
    servers: list[DicomServer] = []

    def start(reader: Any) -> int:
        server = DicomServer(Settings(**{**SERVER_SETTINGS, "mwl_max_answers": 100_000}), sqlite_worklist)  # type: ignore[arg-type]
        server.services[1] = worklist_service(reader, WorklistPolicy(max_answers=100_000))
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


def test_c_cancel_stops_a_long_answer(custom_server: Any, sqlite_worklist: Engines) -> None:
    items = SqlWorklistReader(sqlite_worklist.read).find(WorklistQuery())
    port = custom_server(ManyItems(items, 400))
    scu = Scu(port)
    try:
        answers, _statuses, final = scu.find(mwl_query(), cancel_after=3)
    finally:
        scu.close()
    assert final.Status == Status.CANCEL
    assert 3 <= len(answers) < len(items) * 400


def test_database_failure_is_unable_to_process(custom_server: Any) -> None:
    scu = Scu(custom_server(Broken()))
    try:
        answers, _statuses, final = scu.find(mwl_query())
        assert answers == [] and final.Status == Status.UNABLE_TO_READ_WORKLIST
        assert scu.assoc.send_c_echo().Status == Status.SUCCESS, "the association survives the failure"
    finally:
        scu.close()


def test_stop_is_idempotent_and_frees_the_port(sqlite_worklist: Engines) -> None:
    server = DicomServer(Settings(**SERVER_SETTINGS), sqlite_worklist)  # type: ignore[arg-type]
    port = server.start()
    assert server.start() == port
    server.stop()
    server.stop()
    scu = Scu(port)
    assert not scu.assoc.is_established


# -- dcmtk -------------------------------------------------------------------------------------------------------


def _write_query(path: Path, ds: Dataset) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ModalityWorklistInformationFind
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    dcmwrite(path, ds, enforce_file_format=True)
    return path


@needs_dcmtk
def test_echoscu(dicom_server: tuple[DicomServer, int]) -> None:
    done = subprocess.run(["echoscu", "-aet", "CT01", "-aec", "RADSYNC", "127.0.0.1", str(dicom_server[1])],
                          capture_output=True, text=True, env=DCMTK_ENV, timeout=30)
    assert done.returncode == 0, done.stderr


@needs_dcmtk
def test_findscu_worklist_query_file(dicom_server: tuple[DicomServer, int], tmp_path: Path) -> None:
    query = _write_query(tmp_path / "query.dcm", mwl_query(sps_ScheduledStationAETitle="CT01",
                                                             sps_ScheduledProcedureStepStartDate="20240105"))
    out = tmp_path / "answers"
    out.mkdir()
    done = subprocess.run(
        ["findscu", "-W", "-X", "-od", str(out), "-aet", "CT01", "-aec", "RADSYNC", "127.0.0.1",
         str(dicom_server[1]), str(query)],
        capture_output=True, text=True, env=DCMTK_ENV, timeout=30,
    )
    assert done.returncode == 0, done.stderr
    answers = [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]
    assert sorted(a.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID for a in answers) == [
        "SPS1", "SPS11A", "SPS11B", "SPS3"]
    assert {a.ScheduledProcedureStepSequence[0].ScheduledStationAETitle for a in answers} == {"CT01"}


@needs_dcmtk
def test_findscu_keys_on_the_command_line(dicom_server: tuple[DicomServer, int], tmp_path: Path) -> None:
    done = subprocess.run(
        ["findscu", "-v", "-W", "-X", "-od", str(tmp_path), "-aet", "CT01", "-aec", "RADSYNC",
         "-k", "PatientName=SMITH^J*", "-k", "PatientID", "-k", "ScheduledProcedureStepSequence[0].Modality",
         "-k", "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20240105",
         "127.0.0.1", str(dicom_server[1])],
        capture_output=True, text=True, env=DCMTK_ENV, timeout=30,
    )
    assert done.returncode == 0, done.stderr
    answers = [dcmread(p) for p in sorted(tmp_path.glob("rsp*.dcm"))]
    assert [a.PatientID for a in answers] == ["PID1"] * 4
    assert {a.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate for a in answers} == {"20240105"}


def test_filter_by_calling_ae_when_the_query_names_no_station(sqlite_worklist: Engines) -> None:
    settings = Settings(**{**SERVER_SETTINGS, "mwl_filter_by_calling_ae": True, "mwl_max_answers": 100})  # type: ignore[arg-type]
    server = DicomServer(settings, sqlite_worklist)
    port = server.start()
    try:
        for calling, expected in (("CT01", ["SPS1", "SPS11A", "SPS11B", "SPS3", "SPS6"]), ("MR01", ["SPS13", "SPS2"])):
            scu = Scu(port, calling=calling)
            answers, _statuses, _final = scu.find(mwl_query())
            scu.close()
            assert sorted(a.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID for a in answers) == expected
        scu = Scu(port, calling="CT01")
        answers, _statuses, _final = scu.find(mwl_query(sps_ScheduledStationAETitle="MR01"))
        scu.close()
        assert len(answers) == 2, "a station named in the query wins over the calling AE title"
    finally:
        server.stop()


def test_no_phi_is_logged_above_debug(scu_factory: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    query = mwl_query(PatientName="Müller*", PatientID="PID3")
    query.SpecificCharacterSet = "ISO_IR 192"
    answers, _statuses, _final = scu_factory().find(query)
    assert len(answers) == 1
    logged = "\n".join(r.getMessage() for r in caplog.records if r.levelno > logging.DEBUG)
    assert "MWL C-FIND from CT01" in logged
    for phi in ("Müller", "ller", "PID3", "Zo", "19900101"):
        assert phi not in logged
