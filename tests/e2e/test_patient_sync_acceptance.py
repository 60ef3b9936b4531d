"""Issue 5 acceptance gaps, end to end on SQLite and PostgreSQL: out-of-order updates across a restart, MPPS under
a merged identifier, C-MOVE after an ADT A08 correction.

Same real parts as tests/e2e/test_patients.py: python-hl7's MLLPClient to the real MLLP listener, dcmtk's findscu
and movescu against the real DICOM listener, pynetdicom for C-STORE and MPPS, dcmtk's storescp as the C-MOVE
destination, the HTTP API in-process. ``running`` builds the whole stack on one settings object, so a second
``running`` on the same database is a restart (no state carried over in memory).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hl7
import pytest
from pydicom import dcmread
from sqlalchemy import text

from radsync.config import Settings, load_settings
from tests.adapters.hl7.samples import OMI_STAT_9_2
from tests.adapters.outbox.receiver import Receiver, wait_until
from tests.adapters.outbox.support import FAST
from tests.dcmtk import running_storescp
from tests.e2e.test_patients import ROOT, Site, adt, orm, running

FINDSCU, MOVESCU, STORESCP = "/usr/bin/findscu", "/usr/bin/movescu", "/usr/bin/storescp"
needs_dcmtk = pytest.mark.skipif(
    not all(os.path.exists(t) for t in (FINDSCU, MOVESCU, STORESCP)), reason="dcmtk is not installed"
)
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    out = tmp_path / "moved"
    out.mkdir()
    with running_storescp(out) as port:
        yield port, out


def site_settings(tmp_path: Path, database_url: str, ris: Receiver, **extra: Any) -> Settings:
    destination = {"name": "ris", "host": "127.0.0.1", "port": ris.port, "events": ["patient"], **FAST}
    return load_settings(None, {
        "data_dir": tmp_path / "data", "database_url": database_url, "hl7_destinations": [destination],
        "timezone": "Europe/Berlin", "dicom_port": 0, "dicom_processes": 1,
        "stations": [{"ae_title": "CT01", "modality": "CT"}], **extra,
    })


@pytest.fixture
def ris() -> Iterator[Receiver]:
    receiver = Receiver().start()
    try:
        yield receiver
    finally:
        receiver.close()


@needs_dcmtk
def test_an_older_a08_after_a_restart_does_not_roll_the_patient_back(
    tmp_path: Path, database_url: str, ris: Receiver
) -> None:
    settings = site_settings(tmp_path, database_url, ris)
    with running(settings, ris, tmp_path) as site:
        site.accepted(orm("P1", "Doe^Jane", "ACC1", "O1", msh7="20240611090000"))
        site.accepted(adt("A08", "P1", "Doe^Janet", "A1", msh7="20240611120500", evn2="20240611120000"))
    with running(settings, ris, tmp_path) as site:  # a restart: new process state, same database
        # EVN-2 older than the applied update's, MSH-7 newer: EVN-2 (when the event happened) decides
        site.accepted(adt("A08", "P1", "Doe^Old", "A2", msh7="20240611130000", evn2="20240611110000"))
        # an A31 (update patient information) with an older MSH-7 and no EVN-2 is ignored the same way
        site.accepted(adt("A31", "P1", "Doe^Older", "A3", msh7="20240611100000", structure="ADT_A05"))
        [item] = site.mwl("PatientID=P1")
        assert str(item.PatientName) == "Doe^Janet"
        [patient] = [site.http.get("/api/patients/P1").json()]
        assert patient["name"] == "Doe^Janet"
        history = site.history("P1")["history"]
        assert [e["kind"] for e in history][-2:] == ["demographics.stale", "demographics.stale"]
        assert [e["by"]["control_id"] for e in history[-2:]] == ["A2", "A3"]
        site.accepted(adt("A31", "P1", "Doe^Thirty^One", "A5", msh7="20240611133000", structure="ADT_A05"))
        assert str(site.mwl("PatientID=P1")[0].PatientName) == "Doe^Thirty^One"  # a newer A31 applies
        # a newer one still applies after the restart
        site.accepted(adt("A08", "P1", "Doe^Newer", "A4", msh7="20240611140000", evn2="20240611135900"))
        assert str(site.mwl("PatientID=P1")[0].PatientName) == "Doe^Newer"


@pytest.fixture
def site(tmp_path: Path, database_url: str, ris: Receiver) -> Iterator[Site]:
    with running(site_settings(tmp_path, database_url, ris), ris, tmp_path) as s:
        yield s


def test_an_mpps_created_under_a_merged_identifier_attaches_to_the_survivor(site: Site) -> None:
    site.accepted(orm("P8", "Rossi^Maria", "ACC8", "O1"))
    site.accepted(adt("A40", "P8", "Rossi^Maria", "M1", msh7="20240611160000", prior="TMP8", structure="ADT_A39"))
    site.mpps_in_progress(f"{ROOT}.18", "TMP8")  # the modality still has the temporary ID
    state, _ = site.mpps_state(f"{ROOT}.18")
    assert state == "matched"
    with site.container.engines.read.connect() as conn:
        status = conn.execute(text(
            "SELECT s.status FROM scheduled_steps s JOIN orders o ON o.pk = s.order_pk WHERE o.accession = 'ACC8'"
        )).scalar_one()
    assert status == "STARTED"  # the survivor's order advanced


@pytest.fixture
def moving_site(tmp_path: Path, database_url: str, ris: Receiver, storescp: tuple[int, Path]) -> Iterator[Site]:
    destinations = [{"ae_title": "STORESCP", "host": "127.0.0.1", "port": storescp[0]}]
    with running(site_settings(tmp_path, database_url, ris, dicom_destinations=destinations), ris, tmp_path) as s:
        yield s


@needs_dcmtk
def test_c_move_after_an_a08_correction_sends_the_new_name_and_keeps_the_old_one(
    moving_site: Site, storescp: tuple[int, Path]
) -> None:
    site, (_, received) = moving_site, storescp
    site.accepted(orm("P6", "Smyth^Jon", "ACC6", "O1"))
    assert site.store(f"{ROOT}.6", "P6", "Smyth^Jon", accession="ACC6") == 0
    assert site.study_state(f"{ROOT}.6") == "matched"
    site.accepted(adt("A08", "P6", "Smith^John", "A1", msh7="20240611170000", evn2="20240611165900"))

    done = subprocess.run([MOVESCU, "-v", "-S", "-aec", "RADSYNC", "-aem", "STORESCP",
                           "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={ROOT}.6",
                           "127.0.0.1", str(site.dicom_port)], capture_output=True, text=True, timeout=60,
                          env=DCMTK_ENV)
    assert done.returncode == 0, done.stderr
    assert "received final move response (success)" in done.stderr.lower()
    [moved] = [dcmread(p) for p in received.iterdir()]
    assert str(moved.PatientName) == "Smith^John" and moved.PatientID == "P6"
    old = moved.OriginalAttributesSequence[-1].ModifiedAttributesSequence[0]
    assert str(old.PatientName) == "Smyth^Jon"
    assert [item.AccessionNumber for item in moved.RequestAttributesSequence] == ["ACC6"]
    [answer] = site.qr("StudyInstanceUID=" + f"{ROOT}.6")  # and the C-FIND answer says the same
    assert str(answer.PatientName) == "Smith^John"
    [got] = site.get(f"{ROOT}.6")  # and a C-GET (dcmtk getscu)
    assert str(got.PatientName) == "Smith^John"
    assert str(got.OriginalAttributesSequence[-1].ModifiedAttributesSequence[0].PatientName) == "Smyth^Jon"


@pytest.fixture
def two_ris(tmp_path: Path, database_url: str) -> Iterator[tuple[Site, Receiver, Receiver]]:
    """Destination "orders" gets order status only, "adt" patient messages only: each must get only its own."""
    orders_ris, adt = Receiver().start(), Receiver().start()
    destinations = [
        {"name": "orders", "host": "127.0.0.1", "port": orders_ris.port, "events": ["status"], **FAST},
        {"name": "adt", "host": "127.0.0.1", "port": adt.port, "events": ["patient"], **FAST},
    ]
    settings = site_settings(tmp_path, database_url, adt, hl7_destinations=destinations)
    try:
        with running(settings, adt, tmp_path) as s:
            yield s, orders_ris, adt
    finally:
        orders_ris.close()
        adt.close()


def obx_study_uids(message: str) -> list[str]:
    return [str(s[5]) for s in hl7.parse(message) if str(s[0]) == "OBX" and str(s[3]).startswith("113014")]


@needs_dcmtk
def test_operator_corrections_reach_the_ris_as_status_with_the_study_uid_and_a08_only_where_subscribed(
    two_ris: tuple[Site, Receiver, Receiver],
) -> None:
    site, orders_ris, adt = two_ris
    user = {"X-Radsync-User": "alice"}
    site.accepted(orm("P4", "Ames^Ann", "ACC4", "O1"))
    study = f"{ROOT}.4"
    assert site.store(study, "P4", "Ames^Ann", date="20230101") == 0  # no accession, a year early: unassigned
    assert site.study_state(study) == "unassigned"

    def statuses() -> list[str]:
        return [m for m in orders_ris.messages if "ORM^O01" in m]

    reconciled = site.http.post(f"/api/studies/{study}/reconcile", json={"accession_number": "ACC4", "reason": "r"},
                               headers=user)
    assert reconciled.status_code == 200, reconciled.text
    wait_until(lambda: len(statuses()) >= 1, 10, what="status after reconcile")
    assert obx_study_uids(statuses()[-1]) == [study]
    assert str(hl7.parse(statuses()[-1]).segment("OBR")[18]) == "ACC4"

    unlinked = site.http.post(f"/api/studies/{study}/unlink", json={"accession_number": "ACC4", "reason": "r"},
                               headers=user)
    assert unlinked.status_code == 200, unlinked.text
    wait_until(lambda: len(statuses()) >= 2, 10, what="status after unlink")
    assert obx_study_uids(statuses()[-1]) == []  # the order no longer has that study

    linked = site.http.post(f"/api/studies/{study}/orders", json={"accession_number": "ACC4", "reason": "r"},
                               headers=user)
    assert linked.status_code == 200, linked.text
    wait_until(lambda: len(statuses()) >= 3, 10, what="status after link")
    assert obx_study_uids(statuses()[-1]) == [study]

    fixed = site.http.patch("/api/patients/P4", json={"name": "Eames^Ann"}, headers=user)
    assert fixed.status_code == 200, fixed.text
    wait_until(lambda: any("ADT^A08" in m for m in adt.messages), 10, what="ADT^A08")
    time.sleep(0.5)  # anything misrouted would have arrived by now
    assert not any("ADT^" in m for m in orders_ris.messages)
    assert all("ADT^A08" in m for m in adt.messages)
    assert str(hl7.parse(adt.messages[-1]).segment("PID")[5]) == "Eames^Ann"
    # every link change is in the patient's history too: old and new studies, who, when, why
    history = site.history("P4")["history"]
    links = [e for e in history if e["kind"].startswith("study.")]
    assert [(e["kind"], e["new"]["change"]) for e in links] == [
        ("study.link_changed", "reconciled"), ("study.unlinked", "unlinked"), ("study.link_changed", "linked")]
    assert [(e["old"]["studies"], e["new"]["studies"]) for e in links] == [([], [study]), ([study], []), ([], [study])]
    assert all(e["by"] == {"user": "alice"} and e["at"] and e["new"]["accession"] == "ACC4" for e in links)


@needs_dcmtk
def test_an_unassigned_study_arriving_under_a_merged_identifier_is_found_under_the_survivor(site: Site) -> None:
    site.accepted(orm("P2", "Rossi^Maria", "ACC-S", "O1"))
    site.accepted(adt("A40", "P2", "Rossi^Maria", "M1", msh7="20240611160000", prior="TMP42", structure="ADT_A39"))
    # after the merge, a study under the old ID, no accession, far from any order: it stays unassigned
    assert site.store(f"{ROOT}.42", "TMP42", "Trauma^Female", date="20230101") == 0
    assert site.study_state(f"{ROOT}.42") == "unassigned"
    assert [a.StudyInstanceUID for a in site.qr("PatientID=P2")] == [f"{ROOT}.42"]
    assert site.qr("PatientID=TMP42") == []


def test_the_pid_of_an_omi_xo_updates_the_patient_and_an_older_one_is_ignored(site: Site) -> None:
    site.accepted(OMI_STAT_9_2)
    newer = OMI_STAT_9_2.replace("ORC|NW|", "ORC|XO|").replace("|MSG00002|", "|MSG00003|").replace(
        "20240611101500+0200||OMI", "20240611121500+0200||OMI").replace("Okafor^Chidi^", "Okafor^Chidiebere^")
    site.accepted(newer)
    older = OMI_STAT_9_2.replace("ORC|NW|", "ORC|XO|").replace("|MSG00002|", "|MSG00004|").replace(
        "20240611101500+0200||OMI", "20240611111500+0200||OMI").replace("Okafor^Chidi^", "Okafor^Old^")
    site.accepted(older)
    patient = site.http.get("/api/patients/200345678").json()
    assert patient["name"].startswith("Okafor^Chidiebere")
    kinds = [e["kind"] for e in site.history("200345678")["history"]]
    assert kinds == ["patient.created", "demographics.updated", "demographics.stale"]
