"""Forwarding (auto-routing) through the outbox, end to end with real peers (docs/forwarding.md).

dcmtk's storescu stores into a running radsync; dcmtk's storescp is the downstream PACS; the files it writes are
read back. What must hold: only reconciled studies leave, each copy with the current truth at the moment it is
sent (the received values in the Original Attributes Sequence), the stored original untouched; a study reconciled
later is forwarded then; a peer that is down delays delivery without using up attempts; SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from archive_samples import DCMTK_ENV, DCMTK_STORESCU, HOSP, NOW, place_order, running_archive, sample
from pydicom import dcmread
from pynetdicom import AE, StoragePresentationContexts, evt
from tests.conftest import free_port
from tests.dcmtk import STORESCP, received_copies, running_storescp
from tests.polling import wait_for
from typer.testing import CliRunner

from radsync.adapters.persistence.unit_of_work import transaction
from radsync.app.commands import PlaceOrder, UpdatePatient
from radsync.app.reconcile import ManualReconcile, Unlink
from radsync.bootstrap import Container
from radsync.cli.main import app as cli
from radsync.clock import utc_now
from radsync.config import DicomDestinationSettings
from radsync.domain.ids import EntityId, PatientId
from radsync.domain.names import PersonName
from radsync.domain.order import ImagingOrder, RequestedProcedure, ScheduledStep
from radsync.domain.patient import PatientUpdate
from radsync.domain.study import StudyState

PACS = "PACS"
pytestmark = pytest.mark.skipif(
    not (Path(DCMTK_STORESCU).exists() and Path(STORESCP).exists()), reason="dcmtk is not installed"
)


@contextmanager
def storescp(out: Path, port: int) -> Iterator[int]:
    """dcmtk's storescp as the downstream PACS (tests/dcmtk.py), writing what it receives to ``out``."""
    with running_storescp(out, port, ae_title=PACS) as running:
        yield running


@contextmanager
def forwarding_archive(tmp_path: Path, database_url: str, pacs_port: int) -> Iterator[tuple[Container, int]]:
    destination = DicomDestinationSettings(ae_title=PACS, host="127.0.0.1", port=pacs_port, forward=True,
                                           connect_timeout=1, response_timeout=10, max_attempts=3,
                                           backoff_initial=0.2, backoff_max=0.5)
    with running_archive(tmp_path / "data", database_url=database_url, dicom_destinations=(destination,)) as running:
        container = running[0]
        container.outbox.start()
        try:
            yield running
        finally:
            container.outbox.stop()


def act(container: Container, work: Any) -> Any:
    """A use case in a transaction that routes messages, as the HTTP API and the DICOM listener run them."""
    with transaction(container.engines.write, utc_now, container.outbound) as uow:
        return work(uow)


def store(port: int, *paths: Path) -> None:
    result = subprocess.run([DCMTK_STORESCU, "-aet", "CT01", "-aec", "RADSYNC", "127.0.0.1", str(port),
                             *map(str, paths)], env=DCMTK_ENV, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def forward_entries(container: Container) -> list[Any]:
    return container.outbox.operations.entries(destination=PACS)


def study_state(container: Container, uid: str) -> StudyState:
    return act(container, lambda uow: container.studies.get_study(uow, uid)).study.state


def test_a_matched_study_is_forwarded_with_the_current_truth(tmp_path: Path, database_url: str) -> None:
    pacs_port, out = free_port(), tmp_path / "pacs"
    with storescp(out, pacs_port), forwarding_archive(tmp_path, database_url, pacs_port) as (container, port):
        place_order(container, "ACC-F1")
        files = [sample("CT_small.dcm", tmp_path / f"ct{i}.dcm", accession="ACC-F1", name_value="DOE^JANE",
                        study_uid="1.2.826.0.1.3680043.8.498.424242") for i in range(2)]
        store(port, *files)
        assert study_state(container, "1.2.826.0.1.3680043.8.498.424242") is StudyState.MATCHED
        copies = wait_for(lambda: (r := received_copies(out)) and len(r) == 2 and r)
        for path in files:
            sent = dcmread(path)
            copy = copies[str(sent.SOPInstanceUID)]
            assert str(copy.PatientName) == "Doe^Jane"  # the order's patient, not the header's DOE^JANE
            assert copy.AccessionNumber == "ACC-F1"
            old = copy.OriginalAttributesSequence[-1].ModifiedAttributesSequence[0]
            assert str(old.PatientName) == "DOE^JANE"
            assert copy.OriginalAttributesSequence[-1].ModifyingSystem == "RADSYNC"
        entries = wait_for(lambda: [e for e in forward_entries(container) if e.state == "sent"])
        assert len(forward_entries(container)) == 2  # one entry per instance, none twice
        assert {e.message_type for e in entries} == {"C-STORE"}
        assert all(e.accession == "ACC-F1" for e in entries)  # on the order's timeline
        # the stored originals were never modified
        for path in files:
            sop = str(dcmread(path).SOPInstanceUID)
            row = act(container, lambda uow, sop=sop: uow.studies.instance(sop))
            assert hashlib.sha256(container.blobs.read(row.blob_key)).hexdigest() == row.sha256


def test_an_unassigned_study_waits_until_reconciled_and_then_goes(tmp_path: Path, database_url: str) -> None:
    pacs_port, out = free_port(), tmp_path / "pacs"
    with storescp(out, pacs_port), forwarding_archive(tmp_path, database_url, pacs_port) as (container, port):
        place_order(container, "ACC-F2")
        study = "1.2.826.0.1.3680043.8.498.515151"
        store(port, sample("CT_small.dcm", tmp_path / "a.dcm", accession="UNKNOWN-9", patient_id="P9",
                           name_value="Roe^Rick", study_uid=study))
        assert study_state(container, study) is StudyState.UNASSIGNED
        time.sleep(1.5)  # a worker poll and more: nothing is queued, nothing arrives
        assert forward_entries(container) == [] and received_copies(out) == {}
        # reconciled by an operator (the use case behind POST /api/studies/{uid}/reconcile)
        act(container, lambda uow: container.studies.reconcile_manually(
            uow, ManualReconcile(study, EntityId("ACC-F2"), actor="tester", reason="right order")))
        act(container, lambda uow: container.studies.reconcile_manually(  # a repeat queues nothing more
            uow, ManualReconcile(study, EntityId("ACC-F2"), actor="tester", reason="again")))
        copies = wait_for(lambda: received_copies(out))
        (copy,) = copies.values()
        assert str(copy.PatientName) == "Doe^Jane" and copy.PatientID == "P1"
        assert str(copy.OriginalAttributesSequence[-1].ModifiedAttributesSequence[0].PatientName) == "Roe^Rick"
        # a later instance of the now matched study goes on its own
        store(port, sample("CT_small.dcm", tmp_path / "b.dcm", accession="UNKNOWN-9", patient_id="P9",
                           study_uid=study))
        wait_for(lambda: len(received_copies(out)) == 2)
        assert len(forward_entries(container)) == 2


def test_a_correction_before_delivery_is_in_the_copy_and_a_down_peer_costs_no_attempts(
    tmp_path: Path, database_url: str
) -> None:
    pacs_port, out = free_port(), tmp_path / "pacs"
    with forwarding_archive(tmp_path, database_url, pacs_port) as (container, port):  # the PACS is down
        place_order(container, "ACC-F3")
        path = sample("CT_small.dcm", tmp_path / "c.dcm", accession="ACC-F3")
        store(port, path)
        (entry,) = wait_for(lambda: [e for e in forward_entries(container) if e.state == "failed"])
        assert entry.attempts == 0  # unreachable: not counted against max_attempts
        assert PACS in entry.last_error
        # ADT A08 / PATCH while the entry waits: only the patients row changes
        update = PatientUpdate(PatientId("P1", HOSP), {"name": PersonName.from_canonical("Doe^Janet")})
        act(container, lambda uow: container.orders.update_patient(uow, UpdatePatient(update)))
        time.sleep(1.5)  # several retries (backoff 0.2-0.5 s) against the closed port
        (entry,) = forward_entries(container)
        assert entry.state == "failed" and entry.attempts == 0
        with storescp(out, pacs_port):
            (copy,) = wait_for(lambda: received_copies(out)).values()
        assert str(copy.PatientName) == "Doe^Janet"
        assert str(copy.OriginalAttributesSequence[-1].ModifiedAttributesSequence[0].PatientName) == "Doe^Jane"
        (entry,) = wait_for(lambda: [e for e in forward_entries(container) if e.state == "sent"])
        assert entry.ack_code == "00"


def test_an_entry_whose_study_was_unlinked_meanwhile_is_a_dead_letter_not_a_copy(
    tmp_path: Path, database_url: str
) -> None:
    pacs_port, out = free_port(), tmp_path / "pacs"
    with forwarding_archive(tmp_path, database_url, pacs_port) as (container, port):  # the PACS is down
        place_order(container, "ACC-F4")
        study = "1.2.826.0.1.3680043.8.498.616161"
        store(port, sample("CT_small.dcm", tmp_path / "d.dcm", accession="ACC-F4", study_uid=study))
        wait_for(lambda: [e for e in forward_entries(container) if e.state == "failed"])
        act(container, lambda uow: container.studies.unlink(uow, Unlink(study, actor="tester", reason="wrong")))
        with storescp(out, pacs_port):
            (entry,) = wait_for(lambda: [e for e in forward_entries(container) if e.state == "dead"])
            assert "no longer reconciled" in entry.last_error
            assert received_copies(out) == {}
            # linked again: queued again, and delivered
            act(container, lambda uow: container.studies.reconcile_manually(
                uow, ManualReconcile(study, EntityId("ACC-F4"), actor="tester")))
            wait_for(lambda: received_copies(out))
        assert sorted(e.state for e in forward_entries(container)) == ["dead", "sent"]


@contextmanager
def pynetdicom_pacs(port: int, status: int) -> Iterator[list[int]]:
    """A pynetdicom Storage SCP answering every C-STORE with ``status``; yields the statuses it gave."""
    answered: list[int] = []

    def on_store(event: Any) -> int:
        answered.append(status)
        return status

    ae = AE(ae_title=PACS)
    ae.supported_contexts = StoragePresentationContexts
    ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        yield answered
    finally:
        ae.shutdown()  # the server and its associations: the kept one is gone too


def test_a_failure_status_is_retried_then_dead_and_a_warning_counts_as_sent(
    tmp_path: Path, database_url: str
) -> None:
    pacs_port = free_port()
    with forwarding_archive(tmp_path, database_url, pacs_port) as (container, port):
        place_order(container, "ACC-F5")
        with pynetdicom_pacs(pacs_port, 0xA700) as answered:  # out of resources: max_attempts = 3
            store(port, sample("CT_small.dcm", tmp_path / "e.dcm", accession="ACC-F5"))
            (entry,) = wait_for(lambda: [e for e in forward_entries(container) if e.state == "dead"])
        assert answered == [0xA700] * 3
        assert entry.attempts == 3 and "0xA700" in entry.last_error and entry.ack_code == "A7"
        # what an operator sees and does: radsync outbox list / resend (the CLI, on the same database)
        listed = CliRunner().invoke(cli, ["outbox", "list", "--destination", PACS, "--state", "dead",
                                          "--database-url", database_url], env={"COLUMNS": "250"})
        assert listed.exit_code == 0, listed.output
        assert "C-STORE" in listed.output and "0xA700" in listed.output
        with pynetdicom_pacs(pacs_port, 0xB007) as answered:  # stored, with a warning
            resent = CliRunner().invoke(cli, ["outbox", "resend", str(entry.id), "--database-url", database_url])
            assert resent.exit_code == 0, resent.output
            wait_for(lambda: [e for e in forward_entries(container) if e.state == "sent"])
        assert answered == [0xB007]
        (entry,) = forward_entries(container)
        assert entry.ack_code == "B0"


def test_an_original_that_cannot_be_read_is_a_dead_letter(tmp_path: Path, database_url: str) -> None:
    pacs_port = free_port()
    with forwarding_archive(tmp_path, database_url, pacs_port) as (container, port):  # the PACS is down
        place_order(container, "ACC-F6")
        path = sample("CT_small.dcm", tmp_path / "f.dcm", accession="ACC-F6")
        store(port, path)
        row = act(container, lambda uow: uow.studies.instance(str(dcmread(path).SOPInstanceUID)))
        container.blobs.path(row.blob_key).unlink()
        (entry,) = wait_for(lambda: [e for e in forward_entries(container) if e.state == "dead"])
        assert "cannot be read" in entry.last_error


def test_a_late_order_reconciles_a_waiting_study_and_forwards_it(tmp_path: Path, database_url: str) -> None:
    pacs_port, out = free_port(), tmp_path / "pacs"
    with storescp(out, pacs_port), forwarding_archive(tmp_path, database_url, pacs_port) as (container, port):
        study = "1.2.826.0.1.3680043.8.498.717171"
        store(port, sample("CT_small.dcm", tmp_path / "g.dcm", accession="ACC-F7", study_uid=study))
        assert study_state(container, study) is StudyState.UNASSIGNED
        order = ImagingOrder(
            patient_id=PatientId("P1", HOSP), accession=EntityId("ACC-F7"), filler_number=EntityId("F-7", HOSP),
            procedures=(RequestedProcedure("RP1", "", description="exam",
                                           steps=(ScheduledStep("SPS1", "CT", NOW),)),),
        )
        update = PatientUpdate(PatientId("P1", HOSP), {"name": PersonName.from_canonical("Doe^Jane"),
                                                       "birth_date": dt.date(1980, 3, 4)})
        act(container, lambda uow: container.orders.place(uow, PlaceOrder(update, order)))  # the late ORM
        assert study_state(container, study) is StudyState.MATCHED
        (copy,) = wait_for(lambda: received_copies(out)).values()
        assert copy.AccessionNumber == "ACC-F7" and str(copy.PatientName) == "Doe^Jane"
