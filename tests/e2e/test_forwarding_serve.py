"""Forwarding as a user runs it: `radsync serve` with a TOML file, an ORM over MLLP, images from dcmtk's storescu,
dcmtk's storescp as the downstream PACS, the ops API over HTTP, and a kill -9 in the middle (docs/forwarding.md)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from hl7.client import MLLPClient
from pydicom import dcmread

from tests.adapters.dicom.archive_samples import DCMTK_STORESCU, sample
from tests.dcmtk import DCMTK_ENV, STORESCP, free_port, received_copies, running_storescp
from tests.e2e.orm import orm_new
from tests.e2e.process import RadsyncProcess
from tests.polling import wait_for

pytestmark = pytest.mark.skipif(
    not (Path(DCMTK_STORESCU).exists() and Path(STORESCP).exists()), reason="dcmtk is not installed"
)


def image(path: Path, *, patient: str, name: str, accession: str, study: str) -> Path:
    sample("CT_small.dcm", path, patient_id=patient, accession=accession, name_value=name, study_uid=study)
    ds = dcmread(path)
    ds.IssuerOfPatientID = "GENHOSP"
    ds.PatientBirthDate = "19700412"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_serve_forwards_reconciled_studies_only_and_survives_a_kill(tmp_path: Path, database_url: str) -> None:
    pacs_port, out = free_port(), tmp_path / "pacs"
    config = tmp_path / "radsync.toml"
    config.write_text(  # two DICOM receiving processes: the forwarding entry is queued by a worker
        'dicom_processes = 2\n'
        f'[[dicom_destinations]]\nae_title = "PACS"\nhost = "127.0.0.1"\nport = {pacs_port}\nforward = true\n'
        "connect_timeout = 1.0\nbackoff_initial = 0.2\nbackoff_max = 0.5\n"
    )
    args = [] if database_url.startswith("sqlite") else ["--database-url", database_url]
    radsync = RadsyncProcess(tmp_path / "data", config=config, extra_args=args)
    radsync.data_dir.mkdir()
    radsync.start()
    try:
        with MLLPClient("127.0.0.1", radsync.hl7_port) as client:
            assert b"MSA|AA" in client.send_message(orm_new(1).encode())
        matched = "1.2.826.0.1.3680043.8.498.818181"
        store = [DCMTK_STORESCU, "-aec", "RADSYNC", "127.0.0.1", str(radsync.dicom_port)]
        first = image(tmp_path / "m.dcm", patient="P000001", name="DOE1^JANE^MARIE", accession="A000001",
                      study=matched)
        subprocess.run([*store, str(first)], env=DCMTK_ENV, check=True, capture_output=True)
        api = f"http://127.0.0.1:{radsync.http_port}/api"

        def forward_entries() -> list[dict[str, Any]]:
            answer = httpx.get(f"{api}/outbox", params={"destination": "PACS"}, timeout=5)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            return list(body["entries"] if isinstance(body, dict) else body)

        # the PACS is down: the entry waits, its attempts not counted
        (entry,) = wait_for(lambda: [e for e in forward_entries() if e["state"] == "failed"])
        assert entry["message_type"] == "C-STORE" and entry["attempts"] == 0
        radsync.kill()  # kill -9 with the entry queued
        with running_storescp(out, pacs_port, ae_title="PACS"):
            radsync.start()
            (copy,) = wait_for(lambda: received_copies(out)).values()
            assert str(copy.PatientName) == "Doe1^Jane^Marie^Mrs"  # the order's patient (PID-5, prefix Mrs)
            assert copy.AccessionNumber == "A000001"
            assert str(copy.OriginalAttributesSequence[-1].ModifiedAttributesSequence[0].PatientName) \
                == "DOE1^JANE^MARIE"
            # an unassigned study stays here until an operator reconciles it over the API
            waiting = "1.2.826.0.1.3680043.8.498.828282"
            other = image(tmp_path / "u.dcm", patient="P9", name="Roe^Rick", accession="NOPE", study=waiting)
            subprocess.run([*store, str(other)], env=DCMTK_ENV, check=True, capture_output=True)
            time.sleep(2)
            assert len(received_copies(out)) == 1 and len(forward_entries()) == 1
            answer = httpx.post(f"{api}/studies/{waiting}/reconcile", timeout=10,
                                json={"accession_number": "A000001", "reason": "same exam", "actor": "tester"})
            assert answer.status_code == 200, answer.text
            copies = wait_for(lambda: (r := received_copies(out)) and len(r) == 2 and r)
            assert str(copies[str(dcmread(other).SOPInstanceUID)].PatientName) == "Doe1^Jane^Marie^Mrs"
        assert sorted(e["state"] for e in forward_entries()) == ["sent", "sent"]
        assert radsync.terminate() == 0
    finally:
        radsync.kill()
