"""Storage Commitment Push Model over loopback with pynetdicom as the requester (PS3.4 Annex J): N-ACTION, then
the N-EVENT-REPORT on the same association, or on a new one when the requester has released, committing only
instances safely stored (database and disk)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from archive_samples import NOW, running_archive, sample
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, MRImageStorage, StorageCommitmentPushModel  # type: ignore[attr-defined]
from tests.conftest import free_port

from radsync.adapters.dicom.commitment import (
    ALL_COMMITTED,
    COMMITMENT_INSTANCE_UID,
    REPORT_ANSWER_SECONDS,
    SOME_FAILED,
    CommitmentChecker,
    ReportDelivery,
    event_report,
)
from radsync.adapters.dicom.status import NStatus
from radsync.bootstrap import Container


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[tuple[Container, int]]:
    with running_archive(tmp_path / "data") as running:
        yield running


class Requester:
    """A modality asking for commitment; collects the N-EVENT-REPORTs it receives."""

    def __init__(self, port: int) -> None:
        self.reports: list[tuple[int, Dataset]] = []
        self.arrived = threading.Event()
        ae = AE(ae_title="CT01")
        ae.add_requested_context(StorageCommitmentPushModel)
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        self.assoc = ae.associate("127.0.0.1", port, ae_title="RADSYNC",
                                  evt_handlers=[(evt.EVT_N_EVENT_REPORT, self._on_report)])
        assert self.assoc.is_established

    def _on_report(self, event: Any) -> tuple[int, None]:
        self.reports.append((event.event_type, event.event_information))
        self.arrived.set()
        return 0x0000, None

    def request(self, *references: tuple[str, str]) -> tuple[int, str]:
        info = Dataset()
        info.TransactionUID = generate_uid()
        items = []
        for sop_class, sop_uid in references:
            item = Dataset()
            item.ReferencedSOPClassUID = sop_class
            item.ReferencedSOPInstanceUID = sop_uid
            items.append(item)
        info.ReferencedSOPSequence = Sequence(items)
        status, _ = self.assoc.send_n_action(info, 1, StorageCommitmentPushModel, COMMITMENT_INSTANCE_UID)
        return int(status.Status), str(info.TransactionUID)


def test_only_safely_stored_instances_are_committed(archive: tuple[Container, int], tmp_path: Path) -> None:
    container, port = archive
    stored = dcmread(sample("CT_small.dcm", tmp_path / "ct.dcm"))
    requester = Requester(port)
    try:
        assert int(requester.assoc.send_c_store(stored).Status) == NStatus.SUCCESS
        unknown = generate_uid()
        status, transaction_uid = requester.request(
            (CTImageStorage, stored.SOPInstanceUID),
            (CTImageStorage, unknown),
            (MRImageStorage, stored.SOPInstanceUID),  # stored, but under another SOP Class
        )
        assert status == NStatus.SUCCESS
        assert requester.arrived.wait(10), "no N-EVENT-REPORT"
    finally:
        requester.assoc.release()
    event_type, report = requester.reports[0]
    assert event_type == SOME_FAILED
    assert report.TransactionUID == transaction_uid
    assert [i.ReferencedSOPInstanceUID for i in report.ReferencedSOPSequence] == [stored.SOPInstanceUID]
    failures = {(i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID): i.FailureReason for i in report.FailedSOPSequence}
    assert failures == {(CTImageStorage, unknown): NStatus.NO_SUCH_SOP_INSTANCE,
                        (MRImageStorage, stored.SOPInstanceUID): NStatus.CLASS_INSTANCE_CONFLICT}


def test_all_committed_and_missing_file_is_not(archive: tuple[Container, int], tmp_path: Path) -> None:
    container, port = archive
    first = dcmread(sample("CT_small.dcm", tmp_path / "a.dcm"))
    second = dcmread(sample("CT_small.dcm", tmp_path / "b.dcm"))
    requester = Requester(port)
    try:
        for ds in (first, second):
            assert int(requester.assoc.send_c_store(ds).Status) == NStatus.SUCCESS
        assert requester.request((CTImageStorage, first.SOPInstanceUID))[0] == NStatus.SUCCESS
        assert requester.arrived.wait(10)
        requester.arrived.clear()
        # the file of the second instance disappears from disk: indexed is not enough
        from radsync.adapters.persistence.unit_of_work import transaction

        with transaction(container.engines.read, lambda: None) as uow:  # type: ignore[arg-type,return-value]
            key = uow.studies.instance(second.SOPInstanceUID).blob_key  # type: ignore[union-attr]
        container.blobs.path(key).unlink()
        assert requester.request((CTImageStorage, second.SOPInstanceUID))[0] == NStatus.SUCCESS
        assert requester.arrived.wait(10)
    finally:
        requester.assoc.release()
    assert requester.reports[0][0] == ALL_COMMITTED
    assert requester.reports[1][0] == SOME_FAILED
    assert requester.reports[1][1].FailedSOPSequence[0].FailureReason == NStatus.NO_SUCH_SOP_INSTANCE


class ListeningRequester:
    """A modality that releases right after the N-ACTION and listens for the report (J.3.3, separate association)."""

    def __init__(self, port: int, *, accept_scp_role: bool = True) -> None:
        self.reports: list[tuple[int, Dataset, str]] = []
        self.arrived = threading.Event()
        self.ae = AE(ae_title="CT01")
        # As acceptor: allow the caller (radsync) to take the SCP role for Storage Commitment.
        self.ae.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=accept_scp_role)
        self.server = self.ae.start_server(("127.0.0.1", port), block=False,
                                           evt_handlers=[(evt.EVT_N_EVENT_REPORT, self._on_report)])

    def _on_report(self, event: Any) -> tuple[int, None]:
        self.reports.append((event.event_type, event.event_information, event.assoc.requestor.ae_title))
        self.arrived.set()
        return 0x0000, None

    def stop(self) -> None:
        self.server.shutdown()


def test_report_goes_on_a_new_association_when_the_requester_has_released(archive, tmp_path: Path) -> None:
    """Deterministic: the requesting association is really released before the report is delivered."""
    container, port = archive
    stored = dcmread(sample("CT_small.dcm", tmp_path / "ct.dcm"))
    listen_port = free_port()
    listener = ListeningRequester(listen_port)
    try:
        requester = Requester(port)
        assert int(requester.assoc.send_c_store(stored).Status) == NStatus.SUCCESS
        requester.assoc.release()
        released = requester.assoc
        assert not released.is_established
        verdicts = CommitmentChecker(container.engines.read, container.blobs, lambda: NOW).check(
            [(CTImageStorage, stored.SOPInstanceUID)])
        event_type, report = event_report("1.2.3.4.5", verdicts)
        delivery = ReportDelivery("RADSYNC", {"CT01": ("127.0.0.1", listen_port)}, retry_delays=(0.2,))
        assert delivery.deliver(released, event_type, report)
        assert listener.arrived.wait(5)
        # An AE title without an address: not delivered, and said so (False), never an exception.
        assert not ReportDelivery("RADSYNC", {}).deliver(released, event_type, report)
    finally:
        listener.stop()
    event_type, report, calling_ae = listener.reports[0]
    assert event_type == ALL_COMMITTED
    assert report.TransactionUID == "1.2.3.4.5"
    assert [i.ReferencedSOPInstanceUID for i in report.ReferencedSOPSequence] == [stored.SOPInstanceUID]
    assert calling_ae == "RADSYNC"
    assert requester.reports == []


def test_an_unreachable_requester_is_tried_a_bounded_number_of_times(archive, tmp_path: Path) -> None:
    container, port = archive
    requester = Requester(port)
    requester.assoc.release()
    report = event_report("1.2.3.4.6", [])[1]
    started = time.monotonic()
    nobody = ReportDelivery("RADSYNC", {"CT01": ("127.0.0.1", free_port())}, retry_delays=(0.1, 0.1))
    assert not nobody.deliver(requester.assoc, ALL_COMMITTED, report)
    assert time.monotonic() - started < 30


def test_an_unknown_requester_that_has_released_gets_no_report_and_nothing_breaks(archive, tmp_path: Path) -> None:
    container, port = archive  # no [[dicom_destinations]]: radsync cannot reach CT01 once it has released
    stored = dcmread(sample("CT_small.dcm", tmp_path / "ct.dcm"))
    requester = Requester(port)
    assert int(requester.assoc.send_c_store(stored).Status) == NStatus.SUCCESS
    assert requester.request((CTImageStorage, stored.SOPInstanceUID))[0] == NStatus.SUCCESS
    started = time.monotonic()
    requester.assoc.release()  # a report racing the release is not answered: it must not hold the release long
    assert time.monotonic() - started < REPORT_ANSWER_SECONDS + 3
    again = Requester(port)  # the SCP still serves; a new request on a kept association is answered
    try:
        assert again.request((CTImageStorage, stored.SOPInstanceUID))[0] == NStatus.SUCCESS
        assert again.arrived.wait(10)
    finally:
        again.assoc.release()
    assert again.reports[0][0] == ALL_COMMITTED
