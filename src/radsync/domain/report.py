"""Radiology reports: the result of an imaging order, and the rule for which version is current.

A report goes preliminary -> final -> corrected; each corrected version is a full replacement of the previous
final one, never a delta (HL7 v2.5.1 ch. 7.4.1, OBR-25 table 0123; MAPPING.md §6.2). Receivers replace, not
append, so radsync keeps every version and marks which one is current.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import Enum

from radsync.domain.errors import InvalidTransition, InvalidValue, MissingValue
from radsync.domain.names import PersonName


class ReportStatusRefused(InvalidTransition):
    """The report's result status is not acceptable for the order's current report (a preliminary after a final):
    a business refusal, answered AE 103 on OBR-25 / HTTP 409, never an internal error."""


class ReportStatus(Enum):
    """Result status; ``value`` is the HL7 code of OBR-25 (table 0123) and OBX-11 (table 0085)."""

    PRELIMINARY = "P"
    FINAL = "F"
    CORRECTED = "C"

    @classmethod
    def from_word(cls, word: str) -> ReportStatus:
        """``preliminary`` / ``final`` / ``corrected`` (the HTTP API's words)."""
        try:
            return cls[word.strip().upper()]
        except KeyError:
            raise InvalidValue(f"report status {word!r} is not preliminary, final or corrected",
                               field="report.status") from None

    @property
    def is_final(self) -> bool:
        return self is not ReportStatus.PRELIMINARY


@dataclass(frozen=True, slots=True)
class Report:
    """One version of a report on one order."""

    status: ReportStatus
    text: str
    author: PersonName = PersonName()
    author_id: str = ""
    observed_at: dt.datetime | None = None

    def validate(self) -> None:
        if not self.text.strip():
            raise MissingValue("report text is empty", field="report.text")

    def lines(self) -> list[str]:
        """The text as lines (one OBX TX each); CR, LF and CRLF all end a line, trailing blank lines dropped."""
        lines = self.text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        while lines and not lines[-1].strip():
            lines.pop()
        return lines


def admit(current: ReportStatus | None, incoming: Report) -> Report:
    """The version to store when ``incoming`` arrives while ``current`` is the order's current report.

    A preliminary report never replaces a final one (the RIS would show an unsigned text over a signed one);
    a final report arriving after a final one is a correction and is stored and sent as C, so the receiver
    replaces the earlier text (MAPPING.md §9.8).
    """
    incoming.validate()
    if current is None or current is ReportStatus.PRELIMINARY:
        return incoming
    if incoming.status is ReportStatus.PRELIMINARY:
        raise ReportStatusRefused(
            "a preliminary report cannot replace a final one; send a corrected (C) report", field="report.status"
        )
    if incoming.status is ReportStatus.FINAL:
        return Report(ReportStatus.CORRECTED, incoming.text, incoming.author, incoming.author_id,
                      incoming.observed_at)
    return incoming
