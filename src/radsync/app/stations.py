"""Modality stations: which scanners a step is scheduled on when the order does not say.

HL7 v2.3.1 has no field for the Scheduled Station AE Title (MAPPING.md §1.5), so radsync schedules such a step
on every configured station of its modality; an OMI^O23 names its stations in IPC-9 and those win.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Station:
    ae_title: str
    modality: str
    name: str = ""
    location: str = ""


class StationDirectory:
    """Stations by modality, as configured."""

    def __init__(self, stations: Iterable[Station] = ()) -> None:
        self._stations = tuple(stations)
        self._by_modality: dict[str, tuple[Station, ...]] = {}
        for station in self._stations:
            key = station.modality.upper()
            self._by_modality[key] = self._by_modality.get(key, ()) + (station,)

    def for_modality(self, modality: str) -> tuple[Station, ...]:
        return self._by_modality.get(modality.upper(), ())

    def by_ae_title(self, ae_title: str) -> Station | None:
        return next((s for s in self._stations if s.ae_title == ae_title), None)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._stations)
