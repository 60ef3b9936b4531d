"""Modality Worklist C-FIND SCP (PS3.4 Annex K): identifier -> ``WorklistQuery`` -> items -> pending answers.

The handler does parse -> use case -> encode and nothing else (STYLE.md §9.3): matching lives in app/worklist.py
and the SQL in adapters/persistence/worklist.py. Answers, per PS3.4 K.4.1.2.2 and Table K.4-1:

* one pending response per item (0xFF00; 0xFF01 when a key with a value was ignored), then success;
* more items than ``settings.mwl_max_answers``: the first N are sent, then a final 0xA700 (Refused: Out of
  Resources) whose Error Comment says the query matched more and should be narrowed. PS3.4 has no "partial"
  success for MWL; dcm4chee refuses such queries outright, radsync still shows the first N to a modality that
  displays what it received;
* C-CANCEL: checked before every answer; the next response is 0xFE00 (Cancel);
* an identifier radsync cannot read: 0xA900; the database unavailable: 0xC001; any other error: 0xC000.

Character set per calling station (charset.py); PHI (query values, names) is logged at DEBUG only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from pydicom import Dataset
from pydicom.uid import UID
from pynetdicom import evt
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]  # generated

from radsync.adapters.dicom.charset import DEFAULT_CHARSET, response_charset
from radsync.adapters.dicom.elements import TransferSyntax
from radsync.adapters.dicom.mapping import ResponsePlan, Shape
from radsync.adapters.dicom.query import parse_request
from radsync.adapters.dicom.service import DicomService
from radsync.adapters.dicom.status import InvalidIdentifier, Status, failure
from radsync.app.worklist import Exact, WorklistReader, find_scheduled_steps
from radsync.config import Settings

LOGGER = logging.getLogger(__name__)

Response = tuple[Status | Dataset, Dataset | None]


@dataclass(frozen=True, slots=True)
class WorklistPolicy:
    """Site policy for worklist answers, taken from the settings once."""

    max_answers: int = 5000
    filter_by_calling_ae: bool = False
    station_charsets: Mapping[str, str] | None = None
    site_zone: ZoneInfo | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> WorklistPolicy:
        return cls(
            max_answers=settings.mwl_max_answers,
            filter_by_calling_ae=settings.mwl_filter_by_calling_ae,
            station_charsets={s.ae_title: s.charset for s in settings.stations},
            site_zone=ZoneInfo(settings.timezone) if settings.timezone else None,
        )

    def charset_for(self, calling_ae_title: str) -> str:
        """The station's configured character set; an unknown caller gets UTF-8 (ISO_IR 192)."""
        return (self.station_charsets or {}).get(calling_ae_title.strip(), DEFAULT_CHARSET)


class WorklistFind:
    """The EVT_C_FIND handler for Modality Worklist Information Model - FIND."""

    def __init__(self, reader: WorklistReader, policy: WorklistPolicy) -> None:
        self._reader = reader
        self._policy = policy

    def __call__(self, event: Any) -> Iterator[Response]:
        started = time.perf_counter()
        calling = str(event.assoc.requestor.ae_title).strip()
        peer = event.assoc.requestor.address
        try:
            request = parse_request(event.identifier, site_zone=self._policy.site_zone,
                                    limit=self._policy.max_answers)
        except InvalidIdentifier as exc:
            LOGGER.info("MWL C-FIND from %s@%s refused: %s", calling, peer, exc)
            yield failure(Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, str(exc)), None
            return
        except Exception:
            LOGGER.warning("MWL C-FIND from %s@%s refused: the identifier could not be decoded", calling, peer,
                           exc_info=True)
            yield failure(Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, "identifier could not be decoded"), None
            return
        if not request.charset_known:
            LOGGER.info("MWL C-FIND from %s: unknown Specific Character Set, matching on its ASCII part", calling)
        query = request.query
        if self._policy.filter_by_calling_ae and query.station_ae_title is None:
            query = replace(query, station_ae_title=Exact(calling))
        LOGGER.debug("MWL query from %s: %s", calling, query)
        try:
            items = find_scheduled_steps(self._reader, query)
        except Exception:
            LOGGER.exception("MWL C-FIND from %s@%s: the worklist could not be read", calling, peer)
            yield failure(Status.UNABLE_TO_READ_WORKLIST, "worklist database unavailable"), None
            return
        syntax = UID(event.context.transfer_syntax)
        plan = _plan(request.shape, self._policy.charset_for(calling),
                     TransferSyntax(syntax.is_implicit_VR, syntax.is_little_endian), self._policy.site_zone)
        pending = Status.PENDING_WARNING if request.ignored else Status.PENDING
        sent = 0
        outcome = "complete"
        for item in items:
            if sent >= self._policy.max_answers:
                outcome = f"stopped at the cap of {self._policy.max_answers}"
                yield failure(Status.OUT_OF_RESOURCES,
                              f"more than {self._policy.max_answers} matches; narrow the query"), None
                break
            if event.is_cancelled:
                outcome = "cancelled"
                yield Status.CANCEL, None
                break
            try:
                identifier = plan.dataset(item)
            except Exception:
                LOGGER.exception("MWL C-FIND from %s: could not build answer %d", calling, sent + 1)
                outcome = "failed"
                yield failure(Status.UNABLE_TO_PROCESS, "could not encode a worklist item"), None
                break
            yield pending, identifier
            sent += 1
        LOGGER.info(
            "MWL C-FIND from %s@%s: %d answer(s), %s, %.1f ms%s", calling, peer, sent, outcome,
            (time.perf_counter() - started) * 1000,
            f"; ignored keys with values: {', '.join(request.ignored)}" if request.ignored else "",
        )


@lru_cache(maxsize=16)
def _plan(shape: Shape, charset: str, syntax: TransferSyntax, zone: ZoneInfo | None) -> ResponsePlan:
    """Answer plans by request shape: a modality sends the same shape every time, so this is compiled once.

    At most 16 plans of at most ``mapping.ANSWER_CACHE_SIZE`` cached answers each bound the memory to ~100 MB.
    """
    return ResponsePlan(shape, response_charset(charset), syntax, zone)


def worklist_service(reader: WorklistReader, policy: WorklistPolicy) -> DicomService:
    """The MWL SCP as a service the DicomServer binds."""
    return DicomService(
        name="Modality Worklist",
        sop_classes=(ModalityWorklistInformationFind,),
        handlers=((evt.EVT_C_FIND, WorklistFind(reader, policy)),),
    )


__all__ = ["WorklistFind", "WorklistPolicy", "worklist_service"]
