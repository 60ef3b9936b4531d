"""The sample worklist of the DICOM adapter tests, made through OrderService and SqlUnitOfWork (not HL7).

Fourteen steps over seven patients: accented, ideographic and missing names, a two-procedure order, a multi-valued
station, a night-shift step, and steps that are arrived, started, cancelled and completed.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from radsync.adapters.persistence.engine import Engines
from radsync.adapters.persistence.unit_of_work import transaction
from radsync.app.commands import ChangeStepStatus, PlaceOrder
from radsync.app.orders import OrderService
from radsync.app.ports import OrderKey
from radsync.app.stations import Station, StationDirectory
from radsync.config import StationSettings
from radsync.domain.ids import Code, EntityId, Issuer, PatientId
from radsync.domain.names import NameGroup, PersonName
from radsync.domain.order import ImagingOrder, Priority, RequestedProcedure, ScheduledStep, Visit
from radsync.domain.patient import PatientUpdate, Sex
from radsync.domain.status import StepEvent

CLOCK = dt.datetime(2024, 1, 2, 8, 0)
HOSPITAL = Issuer("GENHOSP", "1.2.3.4.5", "ISO")

STATIONS = (
    Station("CT01", "CT", "CT scanner 1", "RAD-CT"),
    Station("MR01", "MR", "MR 1", "RAD-MR"),
    Station("CR01", "CR"),
    Station("DX01", "DX"),
    Station("MG01", "MG"),
)


def uid(n: int) -> str:
    return f"1.2.826.0.1.3680043.10.1.{n}"


def at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2024, 1, day, hour, minute)


@dataclass(frozen=True)
class StepSpec:
    step_id: str
    modality: str
    start: dt.datetime
    stations: tuple[str, ...] = ()
    performing: PersonName = PersonName()
    description: str = ""
    protocols: tuple[Code, ...] = ()


@dataclass(frozen=True)
class OrderSpec:
    patient: str
    accession: str
    procedures: tuple[tuple[str, int, Priority, tuple[StepSpec, ...]], ...]
    placer: str = ""
    filler: str = ""
    event: StepEvent | None = None


JOHN = PersonName.of("Smith", "John")
PATIENTS: dict[str, dict[str, object]] = {
    "PID1": {"name": JOHN, "birth_date": dt.date(1970, 4, 12), "sex": Sex.MALE,
             "other_ids": (PatientId("OLD-77", Issuer("OLDHOSP")),), "weight_kg": "81"},
    "PID2": {"name": PersonName.of("Smythe", "Jane"), "birth_date": dt.date(1985, 12, 1), "sex": Sex.FEMALE,
             "allergies": ("Iodine",)},
    "PID3": {"name": PersonName.of("Müller", "Zoë"), "birth_date": dt.date(1990, 1, 1), "sex": Sex.FEMALE},
    "PID4": {"name": PersonName(NameGroup("Yamada", "Tarou"), NameGroup("山田", "太郎"), NameGroup("やまだ", "たろう")),
             "birth_date": dt.date(1960, 1, 1), "sex": Sex.MALE},
    "PID5": {"name": PersonName.of("Doe", "Jane", "Marie", "Mrs"), "sex": Sex.FEMALE},
    "PID6": {"name": PersonName.of("O'Brien", "Seán"), "birth_date": dt.date(1955, 5, 5), "sex": Sex.MALE},
    "PID7": {"birth_date": dt.date(2001, 2, 3), "sex": Sex.OTHER},
}

CT_PROTOCOL = Code("P-CT-CHEST", "99RADPROT", "Chest routine non-contrast")
BROWN = PersonName.of("Brown", "Kim")

ORDERS: tuple[OrderSpec, ...] = (
    OrderSpec("PID1", "A1001", (("RP1", 1, Priority.ROUTINE, (
        StepSpec("SPS1", "CT", at(5, 8, 30), performing=BROWN, description="Chest routine", protocols=(CT_PROTOCOL,)),
    )),), placer="PL1001", filler="FL1001"),
    OrderSpec("PID1", "A1002", (("RP2", 2, Priority.ROUTINE, (StepSpec("SPS2", "MR", at(5, 10)),)),)),
    OrderSpec("PID2", "A1003", (("RP3", 3, Priority.STAT, (
        StepSpec("SPS3", "CT", at(5, 11, 45), performing=PersonName.of("Smith", "Anna")),
    )),)),
    OrderSpec("PID2", "A1004", (("RP4", 4, Priority.ROUTINE, (StepSpec("SPS4", "CT", at(6, 2), ("CT02",)),)),)),
    OrderSpec("PID3", "A1005", (("RP5", 5, Priority.HIGH, (StepSpec("SPS5", "US", at(4, 23), ("US1", "US2")),)),)),
    OrderSpec("PID4", "A1006", (("RP6", 6, Priority.ROUTINE, (StepSpec("SPS6", "CT", at(7, 18)),)),)),
    OrderSpec("PID5", "A1007", (("RP7", 7, Priority.ROUTINE, (StepSpec("SPS7", "CR", at(1, 9)),)),),
              event=StepEvent.ARRIVE),
    OrderSpec("PID6", "A1008", (("RP8", 8, Priority.ROUTINE, (StepSpec("SPS8", "CT", at(5, 12)),)),),
              event=StepEvent.CANCEL),
    OrderSpec("PID6", "A1009", (("RP9", 9, Priority.ROUTINE, (StepSpec("SPS9", "MG", at(8, 9)),)),),
              event=StepEvent.COMPLETE),
    OrderSpec("PID7", "A1010", (("RP10", 10, Priority.ROUTINE, (StepSpec("SPS10", "DX", at(5, 9)),)),)),
    OrderSpec("PID1", "A1011", (
        ("RP11A", 11, Priority.ROUTINE, (StepSpec("SPS11A", "CT", at(5, 14), protocols=(CT_PROTOCOL,)),)),
        ("RP11B", 12, Priority.ROUTINE, (StepSpec("SPS11B", "CT", at(5, 14, 30)),)),
    )),
    OrderSpec("PID5", "A1012", (("RP12", 13, Priority.ROUTINE, (StepSpec("SPS12", "CT", at(5, 7)),)),),
              event=StepEvent.START),
    OrderSpec("PID6", "", (("RP13", 14, Priority.ROUTINE, (StepSpec("SPS13", "MR", at(9, 10)),)),),
              placer="PL1013", filler="FL1013"),
)


def _order(spec: OrderSpec) -> ImagingOrder:
    patient_id = PatientId(spec.patient, HOSPITAL)
    procedures = tuple(
        RequestedProcedure(
            procedure_id=rp_id,
            study_instance_uid=uid(n),
            description=f"Procedure {rp_id}",
            code=Code(f"C-{rp_id}", "99RADPROC", f"Procedure {rp_id}"),
            priority=priority,
            transport="WALK",
            steps=tuple(
                ScheduledStep(
                    step_id=s.step_id, modality=s.modality, start=s.start, station_ae_titles=s.stations,
                    performing_physician=s.performing, description=s.description, protocol_codes=s.protocols,
                )
                for s in steps
            ),
        )
        for rp_id, n, priority, steps in spec.procedures
    )
    return ImagingOrder(
        patient_id=patient_id,
        accession=EntityId(spec.accession, Issuer("RIS_HUB")) if spec.accession else EntityId(""),
        placer_number=EntityId(spec.placer or f"PL-{spec.accession}", Issuer("HIS_ORD")),
        filler_number=EntityId(spec.filler or f"FL-{spec.accession}", Issuer("RIS_HUB")),
        visit=Visit(EntityId(f"V-{spec.patient}", Issuer("GENHOSP")), PersonName.of("Jones", "Alice", prefix="Dr"),
                    "RADOPD"),
        requesting_physician=PersonName.of("Smith", "Robert", prefix="Dr"),
        medical_alerts=("Claustrophobic",) if spec.patient == "PID1" else (),
        procedures=procedures,
    )


def seed_sample_worklist(engines: Engines) -> None:
    """Place the sample orders through the order use case, then apply their status events."""
    service = OrderService(StationDirectory(STATIONS), lambda: f"2.25.{uuid.uuid4().int}")
    with transaction(engines.write, lambda: CLOCK) as uow:
        for spec in ORDERS:
            patient = PatientUpdate(PatientId(spec.patient, HOSPITAL), PATIENTS[spec.patient])
            order = service.place(uow, PlaceOrder(patient, _order(spec)))
            if spec.event is not None:
                service.change_status(uow, ChangeStepStatus(OrderKey.of(order), spec.event))


# The test server's settings: answer cap 5, one station per response character set.
SERVER_SETTINGS = dict(
    host="127.0.0.1",
    dicom_port=0,
    ae_title="RADSYNC",
    timezone="UTC",
    mwl_max_answers=5,
    stations=(
        StationSettings(ae_title="CT01", modality="CT"),
        StationSettings(ae_title="LATIN1", modality="CT", charset="ISO_IR 100"),
        StationSettings(ae_title="ASCII1", modality="CT", charset="ASCII"),
    ),
)
