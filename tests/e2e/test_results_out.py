"""Results and status back to the RIS, end to end in one process, against a real MLLP receiver.

The composition root's container (migrations, outbox dispatcher, HL7 wire), the HL7 listener fed by python-hl7's
MLLPClient, the HTTP API in-process (TestClient) and tests/adapters/outbox/receiver.py standing in for the RIS.
Every message the receiver gets is parsed with ``hl7.parse`` as a RIS would.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hl7
import httpx
import pytest
from hl7.client import MLLPClient
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]
from typer.testing import CliRunner

from radsync.adapters.dicom.server import DicomServer
from radsync.adapters.hl7.intake import Hl7Intake
from radsync.adapters.hl7.server import Hl7Server
from radsync.adapters.http.app import create_app
from radsync.adapters.persistence.unit_of_work import transaction
from radsync.bootstrap import Container, build_container
from radsync.cli.main import app as cli
from radsync.clock import utc_now
from radsync.config import load_settings
from tests.adapters.hl7 import samples
from tests.adapters.hl7.test_hl7_loopback import LoopThread
from tests.adapters.outbox.receiver import Answer, Receiver, wait_until
from tests.adapters.outbox.support import FAST
from tests.app.imaging import Hub, instance
from tests.app.test_procedures import mpps, step_refs

TEXT = "FINDINGS: Lungs clear | no effusion ^ R&L ~ 5\\6 mm.\nIMPRESSION: Normal chest, größer."


class Api:
    """The HTTP API in-process (httpx over ASGITransport), driven from the test's thread through ``loop``."""

    def __init__(self, container: Container, loop: LoopThread) -> None:
        self._loop = loop
        self._client = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(container)),
                                         base_url="http://radsync")

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self._loop.run(self._client.get(url, **kwargs))  # type: ignore[no-any-return]

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self._loop.run(self._client.post(url, **kwargs))  # type: ignore[no-any-return]

    def close(self) -> None:
        self._loop.run(self._client.aclose())


@dataclass
class Site:
    container: Container
    ris: Receiver
    http: Api
    hl7_port: int
    data_dir: Path

    def messages(self, message_type: str) -> list[hl7.Message]:
        parsed = [hl7.parse(m) for m in self.ris.messages]
        return [m for m in parsed if str(m.segment("MSH")[9]).startswith(message_type)]

    def wait_for(self, message_type: str, count: int = 1) -> list[hl7.Message]:
        wait_until(lambda: len(self.messages(message_type)) >= count, 10, what=f"{count} {message_type}")
        return self.messages(message_type)

    def send_hl7(self, message: str) -> hl7.Message:
        with MLLPClient("127.0.0.1", self.hl7_port) as client:
            answer = client.send_message(message.encode("utf-8"))
        return hl7.parse(answer.removeprefix(b"\x0b").removesuffix(b"\x1c\r").decode("utf-8"))


@pytest.fixture
def ris() -> Iterator[Receiver]:
    receiver = Receiver().start()
    try:
        yield receiver
    finally:
        receiver.close()


@pytest.fixture
def site(tmp_path: Path, ris: Receiver) -> Iterator[Site]:
    destination = {"name": "ris", "host": "127.0.0.1", "port": ris.port, "events": ["report", "status"], **FAST}
    settings = load_settings(None, {"data_dir": tmp_path / "data", "hl7_destinations": [destination],
                                    "timezone": "Europe/Berlin", "dicom_port": 0, "dicom_processes": 1})
    container = build_container(settings)
    container.outbox.start()
    intake = Hl7Intake(settings, container.engines, container.orders, utc_now, outbound=container.outbound)
    intake.start()
    loop = LoopThread()
    server = Hl7Server(intake, "127.0.0.1", 0, max_message_bytes=64 * 1024)
    port = loop.run(server.start())
    Hub(container.engines).place("ACC1")
    http = Api(container, loop)
    try:
        yield Site(container, ris, http, port, tmp_path / "data")
    finally:
        http.close()
        loop.run(server.stop())
        intake.stop()
        loop.close()
        container.outbox.stop()
        container.engines.dispose()


def post_report(site: Site, status: str, text: str = TEXT, accession: str = "ACC1"):  # type: ignore[no-untyped-def]
    return site.http.post("/api/reports", json={"accession_number": accession, "status": status, "text": text,
                                                "author": "Lee^Hannah", "observed_at": "2024-06-12T16:29:00+02:00"})


def test_final_report_over_http_arrives_as_a_valid_oru_and_a_correction_as_c(site: Site) -> None:
    response = post_report(site, "final")
    assert response.status_code == 201, response.text

    [oru] = site.wait_for("ORU^R01")
    assert str(oru.segment("MSH")[10]) in response.json()["control_ids"]
    assert str(oru.segment("PID")[3][0][0]) == "P1" and str(oru.segment("PID")[5]) == "Doe^Jane"
    obr = oru.segment("OBR")
    assert (str(obr[18]), str(obr[24]), str(obr[25]), str(obr[22])) == ("ACC1", "RAD", "F", "20240612162900+0200")
    assert {str(s[11]) for s in oru.segments("OBX")} == {"F"}
    text = [oru.unescape(str(s[5])) for s in oru.segments("OBX") if str(s[2]) == "TX"]
    assert "\n".join(text) == TEXT
    study_uid = Hub(site.container.engines).order("ACC1").procedures[0].study_instance_uid
    assert [str(s[5]) for s in oru.segments("OBX") if str(s[3]) == "113014^DICOM Study^DCM"] == [study_uid]
    [status] = site.wait_for("ORM^O01")
    assert (str(status.segment("ORC")[1]), str(status.segment("ORC")[5])) == ("SC", "CM")

    assert post_report(site, "corrected", "IMPRESSION: nodule, see addendum.").status_code == 201
    corrected = site.wait_for("ORU^R01", 2)[1]
    assert str(corrected.segment("OBR")[25]) == "C"
    assert {str(s[11]) for s in corrected.segments("OBX")} == {"C"}


def test_report_for_an_unknown_accession_is_404_with_an_explanation(site: Site) -> None:
    response = post_report(site, "final", accession="NOPE")
    assert response.status_code == 404
    assert response.json()["error"] == "unknown_order" and response.json()["detail"]


def test_oru_in_over_mllp_is_stored_and_forwarded_and_an_unknown_order_gets_ae_204(site: Site) -> None:
    oru = (
        "MSH|^~\\&|DICTATION|RAD|RADSYNC|RAD|20240612163000||ORU^R01^ORU_R01|DICT0001|P|2.5.1\r"
        "PID|1||P1^^^HOSP\r"
        "OBR|1||F-ACC1^RIS||||20240612083000|||||||||||{acc}||||||CT|P|||||||R9001&Lee&Hannah\r"
        "OBX|1|TX|18782-3^Radiology Study observation^LN|1|Preliminary: lungs \\T\\ heart normal.||||||P\r"
    )
    ack = site.send_hl7(oru.format(acc="ACC1"))
    assert str(ack.segment("MSA")[1]) == "AA"
    [forwarded] = site.wait_for("ORU^R01")
    assert str(forwarded.segment("OBR")[25]) == "P" and str(forwarded.segment("OBR")[18]) == "ACC1"
    assert "lungs & heart" in forwarded.unescape(str(forwarded.segment("OBX")[5]))

    refused = site.send_hl7(oru.format(acc="NOPE").replace("F-ACC1^RIS", "").replace("DICT0001", "DICT0002"))
    assert str(refused.segment("MSA")[1]) == "AE"
    assert "204" in str(refused.segment("ERR"))


def test_step_start_through_the_mpps_use_case_sends_orm_sc_ip(site: Site) -> None:
    order = Hub(site.container.engines).order("ACC1")
    with transaction(site.container.engines.write, utc_now, site.container.outbound) as uow:
        site.container.procedures.mpps_create(uow, mpps("1.2.3.9", *step_refs(order)))
    [status] = site.wait_for("ORM^O01")
    assert (str(status.segment("ORC")[1]), str(status.segment("ORC")[5])) == ("SC", "IP")
    assert str(status.segment("ORC")[3]) == "F-ACC1^RIS" and str(status.segment("OBR")[18]) == "ACC1"


def test_timeline_shows_messages_in_and_out_and_events_in_time_order(site: Site) -> None:
    post_report(site, "final")
    site.wait_for("ORM^O01")
    wait_until(lambda: all(e["state"] == "sent" for e in site.http.get("/api/outbox").json()), 10, what="sent")

    body = site.http.get("/api/orders/ACC1/timeline").json()
    kinds = [(e["kind"], e.get("event") or e.get("message_type")) for e in body["entries"]]
    assert ("event", "order.created") in kinds and ("event", "report.final") in kinds
    assert ("message_out", "ORU^R01") in kinds and ("message_out", "ORM^O01") in kinds
    assert [e["at"] for e in body["entries"]] == sorted(e["at"] for e in body["entries"])
    assert all(e["state"] == "sent" for e in body["entries"] if e["kind"] == "message_out")
    assert site.http.get("/api/orders/NOPE/timeline").status_code == 404


def test_hl7_order_in_appears_on_the_timeline_as_a_message_in(site: Site) -> None:
    assert str(site.send_hl7(samples.ORM_NEW_9_1).segment("MSA")[1]) == "AA"
    entries = site.http.get("/api/orders/A2024061100017/timeline").json()["entries"]
    assert entries[0]["kind"] == "message_in" and entries[0]["control_id"] == "MSG00001"
    assert entries[1]["kind"] == "event" and entries[1]["message_id"] == entries[0]["message_id"]


def test_outbox_list_and_resend_over_http_and_cli(site: Site) -> None:
    site.ris.script = lambda _cid, n: (Answer("AR"),) if n == 1 else (Answer(),)
    post_report(site, "final")
    wait_until(lambda: len(site.http.get("/api/outbox", params={"state": "dead"}).json()) == 2, 10, what="dead")

    dead = site.http.get("/api/outbox", params={"state": "dead"}).json()
    assert {e["message_type"] for e in dead} == {"ORU^R01", "ORM^O01"}
    assert site.http.post("/api/outbox/999999/resend").status_code == 404
    resent = site.http.post(f"/api/outbox/{dead[0]['id']}/resend")
    assert resent.status_code == 200 and resent.json()["control_id"] == dead[0]["control_id"]
    wait_until(lambda: site.ris.times_seen(dead[0]["control_id"]) == 2, 10, what="the resend")

    runner = CliRunner()
    listed = runner.invoke(cli, ["outbox", "list", "--state", "dead", "--data-dir", str(site.data_dir)])
    assert listed.exit_code == 0, listed.output
    assert str(dead[1]["id"]) in listed.output
    done = runner.invoke(cli, ["outbox", "resend", str(dead[1]["id"]), "--data-dir", str(site.data_dir)])
    assert done.exit_code == 0, done.output
    wait_until(lambda: site.ris.times_seen(dead[1]["control_id"]) == 2, 10, what="the CLI resend")
    missing = runner.invoke(cli, ["outbox", "resend", "999999", "--data-dir", str(site.data_dir)])
    assert missing.exit_code == 1


def test_outbox_metrics_appear_once_the_dispatcher_runs(site: Site) -> None:
    post_report(site, "final")
    site.wait_for("ORU^R01")
    wait_until(lambda: "radsync_outbox_sent_total" in site.http.get("/metrics").text, 10, what="metrics")
    assert 'radsync_outbox_depth{destination="ris"}' in site.http.get("/metrics").text



def test_mpps_over_dicom_sends_ip_then_cm_to_the_ris(site: Site) -> None:
    order = Hub(site.container.engines).order("ACC1")
    procedure, step = order.procedures[0], order.procedures[0].steps[0]
    server = DicomServer(site.container.settings, site.container.engines, site.container)
    port = server.start()
    try:
        ae = AE(ae_title="CT01")
        ae.add_requested_context(ModalityPerformedProcedureStep)
        assoc = ae.associate("127.0.0.1", port, ae_title=site.container.settings.ae_title)
        assert assoc.is_established
        item = Dataset()
        item.StudyInstanceUID = procedure.study_instance_uid
        item.AccessionNumber = "ACC1"
        item.RequestedProcedureID = procedure.procedure_id
        item.ScheduledProcedureStepID = step.step_id
        item.ReferencedStudySequence = Sequence()
        create = Dataset()
        create.ScheduledStepAttributesSequence = Sequence([item])
        create.PatientID, create.IssuerOfPatientID, create.PatientName = "P1", "HOSP", "Doe^Jane"
        create.PerformedProcedureStepID, create.PerformedStationAETitle, create.Modality = "PPS1", "CT01", "CT"
        create.PerformedProcedureStepStartDate, create.PerformedProcedureStepStartTime = "20240612", "090000"
        create.PerformedProcedureStepStatus = "IN PROGRESS"
        create.PerformedProcedureStepEndDate = create.PerformedProcedureStepEndTime = ""
        create.PerformedSeriesSequence = Sequence()
        uid = "1.2.826.0.1.3680043.10.4242"
        status, _ = assoc.send_n_create(create, ModalityPerformedProcedureStep, uid)
        assert status.Status == 0
        done = Dataset()
        done.PerformedProcedureStepStatus = "COMPLETED"
        done.PerformedProcedureStepEndDate, done.PerformedProcedureStepEndTime = "20240612", "093000"
        done.PerformedSeriesSequence = Sequence()
        status, _ = assoc.send_n_set(done, ModalityPerformedProcedureStep, uid)
        assert status.Status == 0
        assoc.release()
    finally:
        server.stop()
    statuses = [str(m.segment("ORC")[5]) for m in site.wait_for("ORM^O01", 2)]
    assert statuses == ["IP", "CM"]


def test_preliminary_over_mllp_after_a_final_is_ae_103_on_obr_25_not_an_internal_error(site: Site) -> None:
    oru = (
        "MSH|^~\\&|DICTATION|RAD|RADSYNC|RAD|20240612163000||ORU^R01^ORU_R01|{control}|P|2.5.1\r"
        "PID|1||P1^^^HOSP\r"
        "OBR|1||F-ACC1^RIS||||20240612083000|||||||||||ACC1||||||CT|{status}|||||||R9001&Lee&Hannah\r"
        "OBX|1|TX|18782-3^Radiology Study observation^LN|1|Lungs clear.||||||{status}\r"
    )
    assert str(site.send_hl7(oru.format(control="DICT0101", status="F")).segment("MSA")[1]) == "AA"
    refused = site.send_hl7(oru.format(control="DICT0102", status="P"))
    assert str(refused.segment("MSA")[1]) == "AE"
    err = refused.segment("ERR")
    assert str(err[2]) == "OBR^1^25"
    assert str(err[3]).startswith("103^Table value not found")
    assert "corrected" in str(err[8])
    site.wait_for("ORU^R01")
    assert len(site.messages("ORU^R01")) == 1  # the refused preliminary went nowhere


def test_linking_a_further_order_over_http_tells_its_ris_the_study_uid(site: Site) -> None:
    hub = Hub(site.container.engines)
    study_uid = hub.order("ACC1").procedures[0].study_instance_uid
    hub.store(instance(study_uid, accession="ACC1"))
    hub.place("ACC2", study_uid="1.2.3.4242")  # a fresh Hub's UID counter would repeat ACC1's

    response = site.http.post(f"/api/studies/{study_uid}/orders",
                              json={"accession_number": "ACC2", "reason": "one scan, two orders"})
    assert response.status_code == 200, response.text

    [acc2] = site.wait_for("ORM^O01")  # the Hub stored the image without an outbox: ACC1 sent nothing
    assert str(acc2.segment("OBR")[18]) == "ACC2"
    assert (str(acc2.segment("ORC")[1]), str(acc2.segment("ORC")[5])) == ("SC", "CM")
    assert [str(s[5]) for s in acc2.segments("OBX") if str(s[3]) == "113014^DICOM Study^DCM"] == [study_uid]
