"""The MPPS SCP over loopback with pynetdicom as the modality (PS3.4 F.7): N-CREATE without a UID, N-SET
COMPLETED, N-SET after the final state (0x0110), several scheduled steps, unscheduled MPPS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from archive_samples import place_order, run, running_archive, step_statuses
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]

from radsync.adapters.dicom.status import NStatus
from radsync.bootstrap import Container
from radsync.domain.study import StudyState


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[tuple[Container, int]]:
    with running_archive(tmp_path / "data") as running:
        yield running


@pytest.fixture
def modality(archive: tuple[Container, int]) -> Iterator[Any]:
    ae = AE(ae_title="CT01")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    received: list[Dataset] = []  # response command sets: pynetdicom's SCU API hides Affected SOP Instance UID
    assoc = ae.associate("127.0.0.1", archive[1], ae_title="RADSYNC",
                         evt_handlers=[(evt.EVT_DIMSE_RECV, lambda event: received.append(event.message.command_set))])
    assert assoc.is_established
    assoc.received_commands = received
    yield assoc
    assoc.release()


def step_item(order: Any, accession: str) -> Dataset:
    item = Dataset()
    procedure = order.procedures[0]
    item.StudyInstanceUID = procedure.study_instance_uid
    item.AccessionNumber = accession
    item.RequestedProcedureID = procedure.procedure_id
    item.ScheduledProcedureStepID = procedure.steps[0].step_id
    item.ReferencedStudySequence = Sequence()
    return item


def in_progress(*items: Dataset) -> Dataset:
    ds = Dataset()
    ds.ScheduledStepAttributesSequence = Sequence(list(items) or [Dataset()])
    ds.PatientID = "P1"
    ds.IssuerOfPatientID = "HOSP"
    ds.PatientName = "Doe^Jane"
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedStationAETitle = "CT01"
    ds.PerformedProcedureStepStartDate = "20240612"
    ds.PerformedProcedureStepStartTime = "090000"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.PerformedProcedureStepEndDate = ""
    ds.PerformedProcedureStepEndTime = ""
    ds.Modality = "CT"
    ds.PerformedSeriesSequence = Sequence()
    return ds


def completed() -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = "COMPLETED"
    ds.PerformedProcedureStepEndDate = "20240612"
    ds.PerformedProcedureStepEndTime = "093000"
    series = Dataset()
    series.SeriesInstanceUID = generate_uid()
    series.ProtocolName = "HEAD"
    series.ReferencedImageSequence = Sequence()
    ds.PerformedSeriesSequence = Sequence([series])
    return ds


def n_create(assoc: Any, ds: Dataset, uid: str | None = None) -> tuple[int, str]:
    status, _ = assoc.send_n_create(ds, ModalityPerformedProcedureStep, uid)
    command = assoc.received_commands[-1]
    return int(status.Status), str(command.get("AffectedSOPInstanceUID", "") or "")


def n_set(assoc: Any, ds: Dataset, uid: str) -> int:
    status, _ = assoc.send_n_set(ds, ModalityPerformedProcedureStep, uid)
    return int(status.Status)


def test_n_create_without_uid_gets_one_assigned_then_completes(
    archive: tuple[Container, int], modality: Any
) -> None:
    container, _ = archive
    order = place_order(container, "ACC1")
    status, uid = n_create(modality, in_progress(step_item(order, "ACC1")), None)
    assert status == NStatus.SUCCESS
    assert uid.startswith("2.25.")  # assigned by radsync and returned in the response
    assert step_statuses(container, "ACC1") == ["STARTED"]
    assert n_set(modality, completed(), uid) == NStatus.SUCCESS
    assert step_statuses(container, "ACC1") == ["COMPLETED"]
    assert n_set(modality, completed(), uid) == NStatus.PROCESSING_FAILURE  # final: refused (F.7.2.2.3)


def test_n_create_with_the_modalitys_uid_and_duplicate(modality: Any) -> None:
    uid = generate_uid()
    assert n_create(modality, in_progress(), uid)[0] == NStatus.SUCCESS
    assert n_create(modality, in_progress(), uid)[0] == NStatus.DUPLICATE_SOP_INSTANCE


def test_n_set_of_unknown_mpps_and_bad_status(modality: Any) -> None:
    assert n_set(modality, completed(), generate_uid()) == NStatus.NO_SUCH_SOP_INSTANCE
    bad = in_progress()
    bad.PerformedProcedureStepStatus = "COMPLETED"  # N-CREATE must be IN PROGRESS
    assert n_create(modality, bad, generate_uid())[0] == NStatus.INVALID_ATTRIBUTE_VALUE
    missing = in_progress()
    del missing.PerformedProcedureStepStatus
    assert n_create(modality, missing, generate_uid())[0] == NStatus.MISSING_ATTRIBUTE


def test_mpps_referencing_several_steps_updates_them_all(archive: tuple[Container, int], modality: Any) -> None:
    container, _ = archive
    orders = [place_order(container, acc) for acc in ("G1", "G2", "G3")]
    items = [step_item(o, acc) for o, acc in zip(orders, ("G1", "G2", "G3"), strict=True)]
    uid = generate_uid()
    assert n_create(modality, in_progress(*items), uid)[0] == NStatus.SUCCESS
    assert n_set(modality, completed(), uid) == NStatus.SUCCESS
    assert [step_statuses(container, acc) for acc in ("G1", "G2", "G3")] == [["COMPLETED"]] * 3


def test_unscheduled_mpps_is_kept_and_waits(archive: tuple[Container, int], modality: Any) -> None:
    container, _ = archive
    uid = generate_uid()
    assert n_create(modality, in_progress(), uid)[0] == NStatus.SUCCESS
    record = run(container, lambda uow: uow.mpps.get(uid))
    assert record is not None
    assert record.state is StudyState.UNASSIGNED
