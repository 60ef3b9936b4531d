"""MPPS SCP (PS3.4 Annex F.7, Modality Performed Procedure Step SOP Class; IHE SWF RAD-6 / RAD-7).

N-CREATE (F.7.2.1): the Attribute List → ``PerformedProcedureStep`` → ``ProcedureService.mpps_create`` in one
transaction. When the modality sends no Affected SOP Instance UID (pynetdicom#996, FIELD-NOTES I.60) radsync
assigns one (UUID-derived, 2.25 root) and returns it in the response (PS3.7 10.1.5.1.4). A Scheduled Step
Attributes Sequence with several items updates every step it names; an empty one (unscheduled MPPS) is kept and
reconciled like an unmatched study.

N-SET (F.7.2.2): the Modification List → ``MppsChange`` → ``ProcedureService.mpps_set``. Relationship and patient
attributes are "Not allowed" in N-SET (Table F.7.2-1): they are ignored, not applied. An N-SET on a COMPLETED or
DISCONTINUED MPPS is refused with 0x0110 Processing Failure (F.7.2.2.3).

Errors → statuses, one table (``status.n_status_for``):

==============================  ========================================================================
DuplicateMpps                   0x0111 Duplicate SOP Instance
UnknownMpps                     0x0112 No Such SOP Instance
MppsNotInProgress               0x0110 Processing Failure
InvalidValue                    0x0106 Invalid Attribute Value (e.g. N-CREATE not IN PROGRESS)
PPS Status absent / empty       0x0120 Missing Attribute / 0x0121 Missing Attribute Value
anything else                   0x0110 Processing Failure (logged)
==============================  ========================================================================
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import evt
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]
from sqlalchemy import Engine

from radsync.adapters.dicom.instance_header import (
    date_of,
    items_of,
    person_name,
    request_item,
    text_of,
    time_of,
)
from radsync.adapters.dicom.service import DicomService
from radsync.adapters.dicom.status import NStatus, n_failure, n_status_for
from radsync.adapters.persistence.unit_of_work import Clock, transaction
from radsync.app.outbound import NO_OUTBOUND, Outbound
from radsync.app.procedures import MppsCreate, MppsSet, ProcedureService
from radsync.domain.errors import DomainError, InvalidValue
from radsync.domain.ids import Code, Issuer, PatientId
from radsync.domain.mpps import MppsChange, MppsStatus, PerformedProcedureStep, PerformedSeries
from radsync.domain.patient import Sex

log = logging.getLogger(__name__)

Answer = tuple[Dataset | int, Dataset | None]


class MppsHandlers:
    """EVT_N_CREATE and EVT_N_SET for the MPPS SOP Class."""

    def __init__(
        self, engine: Engine, procedures: ProcedureService, clock: Clock, outbound: Outbound = NO_OUTBOUND
    ) -> None:
        self._engine = engine
        self._outbound = outbound  # order status messages (ORM^O01 SC) go out in the same transaction
        self._procedures = procedures
        self._clock = clock

    def on_n_create(self, event: Any) -> Answer:
        request = event.request
        given_uid = str(request.AffectedSOPInstanceUID or "")
        uid = given_uid or str(generate_uid(prefix=None))
        try:
            attributes = event.attribute_list
        except Exception:  # undecodable Attribute List
            return n_failure(NStatus.PROCESSING_FAILURE, "attribute list cannot be decoded"), None
        status_problem = _status_problem(attributes)
        if status_problem is not None:
            return status_problem, None
        try:
            mpps = mpps_from_create(uid, attributes)
            with transaction(self._engine, self._clock, self._outbound) as uow:
                recorded = self._procedures.mpps_create(uow, MppsCreate(mpps, _calling_ae(event)))
        except DomainError as error:
            log.warning("MPPS N-CREATE %s refused: %s", uid, error)
            return n_failure(n_status_for(error), str(error)), None
        except Exception:
            log.exception("MPPS N-CREATE %s failed", uid)
            return n_failure(NStatus.PROCESSING_FAILURE, "internal error"), None
        log.info("MPPS %s created (%s, %d steps referenced, %s)", uid, recorded.mpps.status.value,
                 len(mpps.scheduled_steps), recorded.state.value)
        reply = Dataset()
        if not given_uid:
            reply.AffectedSOPInstanceUID = uid  # pynetdicom moves it into the response command set
        return int(NStatus.SUCCESS), reply

    def on_n_set(self, event: Any) -> Answer:
        uid = str(event.request.RequestedSOPInstanceUID or "")
        try:
            modifications = event.modification_list
        except Exception:
            return n_failure(NStatus.PROCESSING_FAILURE, "modification list cannot be decoded"), None
        if "PerformedProcedureStepStatus" in modifications and not text_of(modifications,
                                                                           "PerformedProcedureStepStatus"):
            return n_failure(NStatus.MISSING_ATTRIBUTE_VALUE, "Performed Procedure Step Status empty"), None
        try:
            change = change_from_set(modifications)
            with transaction(self._engine, self._clock, self._outbound) as uow:
                recorded = self._procedures.mpps_set(uow, MppsSet(uid, change))
        except DomainError as error:
            log.warning("MPPS N-SET %s refused: %s", uid, error)
            return n_failure(n_status_for(error), str(error)), None
        except Exception:
            log.exception("MPPS N-SET %s failed", uid)
            return n_failure(NStatus.PROCESSING_FAILURE, "internal error"), None
        log.info("MPPS %s set (%s)", uid, recorded.mpps.status.value)
        return int(NStatus.SUCCESS), modifications


def mpps_from_create(uid: str, ds: Dataset) -> PerformedProcedureStep:
    """The N-CREATE Attribute List as a ``PerformedProcedureStep`` (PS3.4 Table F.7.2-1)."""
    return PerformedProcedureStep(
        sop_instance_uid=uid,
        status=_status(text_of(ds, "PerformedProcedureStepStatus")),
        patient_id=PatientId(text_of(ds, "PatientID"), Issuer(text_of(ds, "IssuerOfPatientID"))),
        patient_name=person_name(ds.get("PatientName")),
        birth_date=date_of(text_of(ds, "PatientBirthDate")),
        sex=_sex(text_of(ds, "PatientSex")),
        scheduled_steps=tuple(request_item(item) for item in items_of(ds, "ScheduledStepAttributesSequence")),
        pps_id=text_of(ds, "PerformedProcedureStepID"),
        station_ae_title=text_of(ds, "PerformedStationAETitle"),
        station_name=text_of(ds, "PerformedStationName"),
        modality=text_of(ds, "Modality"),
        start=_datetime(ds, "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime"),
        end=_datetime(ds, "PerformedProcedureStepEndDate", "PerformedProcedureStepEndTime"),
        description=text_of(ds, "PerformedProcedureStepDescription"),
        procedure_codes=_codes(ds, "ProcedureCodeSequence"),
        discontinuation_reason=_first_code(ds, "PerformedProcedureStepDiscontinuationReasonCodeSequence"),
        performed_series=_series(ds),
    )


def change_from_set(ds: Dataset) -> MppsChange:
    """The N-SET Modification List as an ``MppsChange``: only attributes present are set."""
    status = text_of(ds, "PerformedProcedureStepStatus")
    return MppsChange(
        status=_status(status) if status else None,
        end=_datetime(ds, "PerformedProcedureStepEndDate", "PerformedProcedureStepEndTime"),
        description=text_of(ds, "PerformedProcedureStepDescription")
        if "PerformedProcedureStepDescription" in ds else None,
        procedure_codes=_codes(ds, "ProcedureCodeSequence") if "ProcedureCodeSequence" in ds else None,
        discontinuation_reason=_first_code(ds, "PerformedProcedureStepDiscontinuationReasonCodeSequence"),
        performed_series=_series(ds) if "PerformedSeriesSequence" in ds else None,
    )


def _status_problem(ds: Dataset) -> Dataset | None:
    if "PerformedProcedureStepStatus" not in ds:
        return n_failure(NStatus.MISSING_ATTRIBUTE, "Performed Procedure Step Status missing")
    if not text_of(ds, "PerformedProcedureStepStatus"):
        return n_failure(NStatus.MISSING_ATTRIBUTE_VALUE, "Performed Procedure Step Status empty")
    return None


def _status(text: str) -> MppsStatus:
    try:
        return MppsStatus(text.upper())
    except ValueError:
        raise InvalidValue("unknown Performed Procedure Step Status", field="mpps.status") from None


def _datetime(ds: Dataset, date_keyword: str, time_keyword: str) -> dt.datetime | None:
    day = date_of(text_of(ds, date_keyword))
    if day is None:
        return None
    return dt.datetime.combine(day, time_of(text_of(ds, time_keyword)) or dt.time())


def _codes(ds: Dataset, keyword: str) -> tuple[Code, ...]:
    return tuple(
        Code(text_of(item, "CodeValue"), text_of(item, "CodingSchemeDesignator"), text_of(item, "CodeMeaning"))
        for item in items_of(ds, keyword)
        if text_of(item, "CodeValue")
    )


def _first_code(ds: Dataset, keyword: str) -> Code | None:
    codes = _codes(ds, keyword)
    return codes[0] if codes else None


def _series(ds: Dataset) -> tuple[PerformedSeries, ...]:
    return tuple(
        PerformedSeries(
            series_instance_uid=text_of(item, "SeriesInstanceUID"),
            description=text_of(item, "SeriesDescription"),
            protocol_name=text_of(item, "ProtocolName"),
            referenced_sop_instance_uids=tuple(
                text_of(ref, "ReferencedSOPInstanceUID") for ref in items_of(item, "ReferencedImageSequence")
            ),
        )
        for item in items_of(ds, "PerformedSeriesSequence")
    )


def _sex(text: str) -> Sex:
    try:
        return Sex(text.upper())
    except ValueError:
        return Sex.UNKNOWN


def _calling_ae(event: Any) -> str:
    try:
        return str(event.assoc.requestor.ae_title).strip()
    except AttributeError:
        return ""


def mpps_service(
    engine: Engine, procedures: ProcedureService, clock: Clock, outbound: Outbound = NO_OUTBOUND
) -> DicomService:
    handlers = MppsHandlers(engine, procedures, clock, outbound)
    return DicomService(
        name="MPPS",
        sop_classes=(ModalityPerformedProcedureStep,),
        handlers=((evt.EVT_N_CREATE, handlers.on_n_create), (evt.EVT_N_SET, handlers.on_n_set)),
    )
