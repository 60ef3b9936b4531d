"""Patient messages out (HL7 v2.5.1 ch. 3; IHE RAD-12 the other way), to destinations that list ``"patient"``.

* ADT^A08 ``MSH EVN PID PV1`` when demographics are corrected through the API: PID carries the patient as
  stored now; PV1 is the minimal ``PV1|1|N`` (class N, "not applicable": the update is about the patient).
* ADT^A40 ``MSH EVN PID MRG PV1`` after a merge, ADT^A47 ``MSH EVN PID MRG`` after a change of identifier:
  PID is the surviving patient, MRG-1 the prior identifier.
"""

from __future__ import annotations

from radsync.adapters.hl7.outbound.fields import cx, date, dtm, esc, segment, xpn
from radsync.adapters.hl7.outbound.segments import Sender, message, msh
from radsync.app.outbound import Addressed
from radsync.domain.ids import PatientId
from radsync.domain.patient import Patient

ADT_A08_TYPE = "ADT^A08^ADT_A01"
IDENTITY_TYPES = {"A40": "ADT^A40^ADT_A39", "A47": "ADT^A47^ADT_A30"}


def build_patient_update(sender: Sender, patient: Patient, address: Addressed) -> bytes:
    return message(
        msh(sender, address, ADT_A08_TYPE),
        segment("EVN", {1: "A08", 2: dtm(address.at, sender.zone)}),
        _pid(patient),
        segment("PV1", {1: "1", 2: "N"}),
    )


def build_identity_change(sender: Sender, patient: Patient, prior: PatientId, event: str, address: Addressed) -> bytes:
    """ADT^A40 (merge) or ADT^A47 (change of identifier): the survivor in PID, the prior identifier in MRG-1."""
    segments = [
        msh(sender, address, IDENTITY_TYPES[event]),
        segment("EVN", {1: event, 2: dtm(address.at, sender.zone)}),
        _pid(patient),
        segment("MRG", {1: cx(prior)}),
    ]
    if event == "A40":
        segments.append(segment("PV1", {1: "1", 2: "N"}))
    return message(*segments)


def _pid(patient: Patient) -> str:
    return segment("PID", {
        1: "1", 3: cx(patient.id), 5: xpn(patient.name), 7: date(patient.birth_date), 8: esc(patient.sex.value),
    })
