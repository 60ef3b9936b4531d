"""C-FIND identifier -> ``WorklistQuery``: parsing the matching keys of a Modality Worklist request (PS3.4 K.2.2).

Per key (``mapping.ATTRIBUTES`` says which keys match and how):

* zero-length or ``*`` only: universal matching, the key is just returned (C.2.2.2.3, C.2.2.2.4 note);
* ``""``: empty value matching (only items without a value);
* ``a\\b``: any of the values (list of UID matching for Study Instance UID; accepted for every key, because
  modalities send ``CT\\PT``);
* ``*`` / ``?`` inside a value: wildcard matching; otherwise single value matching;
* DA ``d``, ``d1-d2``, ``-d2``, ``d1-``; TM likewise; the SPS start date and time combine into one range (C.2.2.2.5);
* Modality, SPS Status, Patient's Sex, Priority: compared upper-case, so ``ct`` finds ``CT``;
* Scheduled Procedure Step Sequence: sequence matching on its one item (C.2.2.2.6); a zero-length sequence, no
  item, or an item of empty keys asks for the whole item. Further items are ignored (warning status).

Keys radsync does not match on but that carry a value (QueryRetrieveLevel, private tags, unsupported optional keys,
reference sequences with UIDs) are ignored and make the answers pending-with-warning (0xFF01, PS3.4 K.4.1.2.2).
Specific Character Set decides how values are decoded; Timezone Offset From UTC shifts the date/time keys into
the site's zone. A value radsync cannot read (a date that is not a date) raises ``InvalidIdentifier`` (0xA900).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field, replace
from typing import Any
from zoneinfo import ZoneInfo

from pydicom import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag

from radsync.adapters.dicom.charset import decode_text, query_encodings
from radsync.adapters.dicom.mapping import (
    BY_TAG,
    SPECIFIC_CHARACTER_SET,
    TIMEZONE_OFFSET_FROM_UTC,
    Attribute,
    Shape,
)
from radsync.adapters.dicom.status import InvalidIdentifier
from radsync.app.worklist import (
    AnyOf,
    DateRange,
    Exact,
    InstantRange,
    IsEmpty,
    StartMatch,
    TextMatch,
    TimeOfDayRange,
    Wildcard,
    WorklistQuery,
    is_wildcard,
)

QUERY_RETRIEVE_LEVEL = 0x00080052
_PN_DELIMITERS = {0x5E, 0x3D}  # ^ =
_TEXT_DELIMITERS = {0x5C}  # backslash
_CHARACTER_VRS = {"PN", "SH", "LO", "ST", "LT", "UT", "UC"}
_END_OF_DAY = dt.time(23, 59, 59, 999999)


@dataclass(frozen=True, slots=True)
class WorklistRequest:
    """What a C-FIND identifier asks: the matching constraints and the keys to return."""

    query: WorklistQuery
    shape: Shape
    # Keywords (or tags) of keys that had a value radsync did not match on: answers use 0xFF01.
    ignored: tuple[str, ...] = ()
    charset_known: bool = True


@dataclass
class _Parse:
    encodings: list[str]
    site_zone: ZoneInfo | None
    offset: dt.timezone | None
    fields: dict[str, Any] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    sps_date: str = ""
    sps_time: str = ""


def parse_request(identifier: Dataset, *, site_zone: ZoneInfo | None = None, limit: int | None = None) -> WorklistRequest:
    """Read a Modality Worklist C-FIND identifier (already decoded by pynetdicom into raw elements)."""
    charset = _raw_text(identifier, SPECIFIC_CHARACTER_SET)
    encodings, known = query_encodings(charset.split("\\") if charset else None)
    offset_text = _raw_text(identifier, TIMEZONE_OFFSET_FROM_UTC).strip()
    state = _Parse(encodings, site_zone, _parse_offset(offset_text) if offset_text else None)
    shape = _parse_level(identifier, BY_TAG, state, top=True)
    start = _start_match(state.sps_date, state.sps_time, state)
    if start is not None:
        state.fields["start"] = start
    query = replace(WorklistQuery(limit=limit), **state.fields)
    return WorklistRequest(query=query, shape=shape, ignored=tuple(state.ignored), charset_known=known)


def _parse_level(ds: Dataset, known: dict[int, Attribute], state: _Parse, *, top: bool) -> Shape:
    shape: list[tuple[int, Shape | None]] = []
    for tag in sorted(ds.keys()):
        elem = ds.get_item(tag)
        if tag.element == 0:  # group lengths carry no query
            continue
        if top and tag in (SPECIFIC_CHARACTER_SET, TIMEZONE_OFFSET_FROM_UTC):
            if tag == TIMEZONE_OFFSET_FROM_UTC:
                shape.append((int(tag), None))
            continue
        attribute = known.get(int(tag))
        if attribute is None:
            if _has_value(elem):
                state.ignored.append(_name(tag))
            continue
        if attribute.items is not None:
            shape.append((int(tag), _parse_sequence(ds, tag, attribute, state)))
            continue
        shape.append((int(tag), None))
        text = _value_text(elem, attribute.vr, state.encodings)
        if not text:
            continue
        if attribute.kind == "sps_date":
            state.sps_date = text
        elif attribute.kind == "sps_time":
            state.sps_time = text
        elif attribute.match is None:
            state.ignored.append(attribute.keyword)
        else:
            parsed = _parse_value(attribute, text)
            if parsed is not None:
                state.fields[attribute.match] = parsed
    return tuple(shape)


def _parse_sequence(ds: Dataset, tag: BaseTag, attribute: Attribute, state: _Parse) -> Shape | None:
    """Sequence matching on the first item; ``None`` (every sub-key) for no item or an empty one."""
    elem = ds.get_item(tag)
    if elem is None or (elem.is_raw and not elem.value):
        return None
    items = ds[tag].value
    if not items:
        return None
    if len(items) > 1:
        state.ignored.append(f"{attribute.keyword}[2:]")
    sub_known = {a.tag: a for a in attribute.items or ()}
    sub_shape = _parse_level(items[0], sub_known, state, top=False)
    return sub_shape or None


# -- values ------------------------------------------------------------------------------------------------------


def _has_value(elem: Any) -> bool:
    if elem is None:
        return False
    if elem.is_raw:
        return bool(elem.value and elem.value.strip(b" \x00"))
    value = elem.value
    if value is None:
        return False
    if isinstance(value, (bytes, str)):
        return bool(value.strip(" \x00") if isinstance(value, str) else value.strip(b" \x00"))
    return len(value) > 0


def _raw_text(ds: Dataset, tag: int) -> str:
    elem = ds.get_item(BaseTag(tag))
    if elem is None:
        return ""
    if elem.is_raw:
        return (elem.value or b"").decode("latin-1").strip(" \x00")
    value = elem.value
    if value is None:
        return ""
    return value if isinstance(value, str) else "\\".join(str(v) for v in value)


def _value_text(elem: Any, vr: str, encodings: list[str]) -> str:
    """The key's value as text, padding removed; multiple values joined by backslash."""
    if elem.is_raw:
        raw = elem.value or b""
        if vr in _CHARACTER_VRS:
            delimiters = _PN_DELIMITERS | _TEXT_DELIMITERS if vr == "PN" else _TEXT_DELIMITERS
            text = decode_text(raw, encodings, delimiters)
        else:
            text = raw.decode("latin-1")
    else:
        value = elem.value
        if value is None:
            text = ""
        elif isinstance(value, bytes):
            text = value.decode("latin-1")
        elif isinstance(value, (list, MultiValue)):
            text = "\\".join(str(v) for v in value)
        else:
            text = str(value)
    return "\\".join(part.strip(" \x00") for part in text.split("\\"))


def _universal(value: str) -> bool:
    return not value or set(value) == {"*"}


def _parse_value(attribute: Attribute, text: str) -> Any:
    if attribute.kind == "date":
        return _date_match(attribute, text)
    return _text_match(text.upper() if attribute.kind == "upper" else text)


def _text_match(text: str) -> TextMatch | None:
    if text == '""':
        return IsEmpty()
    values = tuple(v for v in text.split("\\") if v)
    if not values or any(_universal(v) for v in values):
        return None
    if len(values) > 1:
        return AnyOf(values)
    return Wildcard(values[0]) if is_wildcard(values[0]) else Exact(values[0])


def _date_match(attribute: Attribute, text: str) -> DateRange | IsEmpty | None:
    if text == '""':
        return IsEmpty()
    if _universal(text):
        return None
    lower, upper = _range(text, _parse_date, attribute.keyword)
    return DateRange(lower, upper)


def _range(text: str, parse: Any, keyword: str) -> tuple[Any, Any]:
    if "\\" in text:
        raise InvalidIdentifier(f"{keyword}: a list of values is not allowed here", keyword)
    try:
        if "-" in text:
            low, _, high = text.partition("-")
            return (parse(low.strip()) if low.strip() else None, parse(high.strip()) if high.strip() else None)
        value = parse(text)
        return value, value
    except ValueError:
        raise InvalidIdentifier(f"{keyword}: {text!r} is not a valid value or range", keyword) from None


def _parse_date(text: str) -> dt.date:
    digits = text.replace(".", "")  # ACR-NEMA style 2024.06.12
    if len(digits) != 8 or not digits.isdigit():
        raise ValueError(text)
    return dt.datetime.strptime(digits, "%Y%m%d").date()


_TIME = re.compile(r"^(\d{2})(?::?(\d{2})(?::?(\d{2})(?:\.(\d{1,6}))?)?)?$")


def _parse_time(text: str) -> dt.time:
    m = _TIME.match(text)
    if m is None:
        raise ValueError(text)
    hour, minute, second, fraction = m.groups()
    return dt.time(int(hour), int(minute or 0), int(second or 0), int((fraction or "0").ljust(6, "0")))


def _parse_offset(text: str) -> dt.timezone:
    m = re.fullmatch(r"([+-])(\d{2})(\d{2})", text)
    if m is None:
        raise InvalidIdentifier(f"TimezoneOffsetFromUTC: {text!r} is not +HHMM or -HHMM", "TimezoneOffsetFromUTC")
    sign = -1 if m.group(1) == "-" else 1
    return dt.timezone(sign * dt.timedelta(hours=int(m.group(2)), minutes=int(m.group(3))))


def _start_match(date_text: str, time_text: str, state: _Parse) -> StartMatch | None:
    """The combined SPS start date-time range (PS3.4 C.2.2.2.5.1; MAPPING.md §3.2 rule 7)."""
    dates = None if _universal(date_text) else _range(date_text, _parse_date, "ScheduledProcedureStepStartDate")
    times = None if _universal(time_text) else _range(time_text, _parse_time, "ScheduledProcedureStepStartTime")
    if dates is None and times is None:
        return None
    if dates is None:
        assert times is not None
        return _shift_times(TimeOfDayRange(times[0], times[1]), state)
    first, last = dates
    t_low, t_high = times if times is not None else (None, None)
    lower = dt.datetime.combine(first, t_low or dt.time()) if first else None
    upper = dt.datetime.combine(last, t_high or _END_OF_DAY) if last else None
    return InstantRange(_to_site(lower, state), _to_site(upper, state))


def _to_site(value: dt.datetime | None, state: _Parse) -> dt.datetime | None:
    """A wall-clock time in the query's zone (0008,0201) as wall-clock time in the site's zone."""
    if value is None or state.offset is None:
        return value
    aware = value.replace(tzinfo=state.offset)
    local = aware.astimezone(state.site_zone) if state.site_zone is not None else aware.astimezone()
    return local.replace(tzinfo=None)


def _shift_times(window: TimeOfDayRange, state: _Parse) -> TimeOfDayRange:
    if state.offset is None:
        return window
    today = dt.date.today()

    def shift(t: dt.time | None) -> dt.time | None:
        moved = _to_site(dt.datetime.combine(today, t), state) if t is not None else None
        return moved.time() if moved is not None else None

    return TimeOfDayRange(shift(window.lower), shift(window.upper))


def _name(tag: BaseTag) -> str:
    if tag == QUERY_RETRIEVE_LEVEL:
        return "QueryRetrieveLevel"
    return f"({tag.group:04X},{tag.element:04X})"
