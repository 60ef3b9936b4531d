"""Patient update out: ADT^A08 with the current demographics (HL7 v2.5.1 ch. 3.3.8; IHE RAD-12 the other way).

Sent to destinations that list ``"patient"`` in their ``events`` when demographics are corrected through the
API or a merge leaves a surviving patient: ``MSH EVN PID PV1``. PID carries the patient as stored now; PV1 is
the minimal ``PV1|1|N`` (class N, "not applicable": the update is about the patient, not a visit).
"""

from __future__ import annotations

from radsync.adapters.hl7.outbound.fields import cx, date, dtm, esc, segment, xpn
from radsync.adapters.hl7.outbound.segments import Sender, message, msh
from radsync.app.outbound import Addressed
from radsync.domain.patient import Patient

ADT_A08_TYPE = "ADT^A08^ADT_A01"


def build_patient_update(sender: Sender, patient: Patient, address: Addressed) -> bytes:
    return message(
        msh(sender, address, ADT_A08_TYPE),
        segment("EVN", {1: "A08", 2: dtm(address.at, sender.zone)}),
        segment("PID", {
            1: "1", 3: cx(patient.id), 5: xpn(patient.name), 7: date(patient.birth_date), 8: esc(patient.sex.value),
        }),
        segment("PV1", {1: "1", 2: "N"}),
    )
