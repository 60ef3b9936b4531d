"""Current truth on the way out: an outgoing copy of a stored instance with radsync's patient and order attributes.

ARCHITECTURE invariant 5: the stored file is never modified. Whenever an instance leaves radsync (C-GET, C-MOVE,
later WADO and forwarding), ``apply_current_truth`` coerces, in the in-memory copy only, the attributes the
order/ADT side owns (MAPPING.md §8, IHE RAD TF-2x Appendix A):

* Patient's Name, Patient ID, Issuer of Patient ID, Patient's Birth Date, Patient's Sex: the linked patient's row;
* Accession Number: the (first) linked order's;
* Request Attributes Sequence (0040,0275): one item per linked requested procedure and scheduled step, so a study
  fulfilling several orders names every one of them (grouped procedures, MAPPING.md §7).

Only a MATCHED study is coerced; an UNASSIGNED or CONFLICT one leaves as received (radsync has no better truth).
One exception, for every state: Study Instance UID is the study the instance is filed under now, so series split
off to a new study (grouped procedures, app/reconcile.py ``split``) leave under the new UID while the stored file
keeps the one it was received with.
What changed is recorded in a new item of the Original Attributes Sequence (0400,0561), PS3.3 C.12.1.1.9: the old
values in its Modified Attributes Sequence (0400,0550) -- an attribute that was absent is listed zero-length --,
Attribute Modification DateTime, Modifying System (radsync's AE title), Source of Previous Values (empty: the
values came from this very object) and Reason for the Attribute Modification ``COERCE``. Earlier items are kept.

Character set: when a new value cannot be carried by the object's Specific Character Set, every text value is
decoded first and the copy is re-labelled ISO_IR 192 (the old (0008,0005) goes into the Modified Attributes item
too). Pixel data is never decoded or re-encoded; compressed objects stay compressed.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Sequence
from typing import Any

from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence

from radsync.app.archive import StudyRecord

REASON_COERCE = "COERCE"
ORIGINAL_ATTRIBUTES_SEQUENCE = 0x04000561
REQUEST_ATTRIBUTES_SEQUENCE = 0x00400275
SPECIFIC_CHARACTER_SET = 0x00080005
STUDY_INSTANCE_UID = 0x0020000D
UTF8 = "ISO_IR 192"
_CODECS = {"": "ascii", "ISO_IR 6": "ascii", "ISO_IR 100": "latin-1", "ISO_IR 192": "utf-8"}


def truth_values(study: StudyRecord) -> list[tuple[int, str, Any]]:
    """(tag, VR, value) of every attribute radsync owns for this study. A study shown as received (unassigned,
    conflict) gets its Study Instance UID and its patient identifier: a merge re-keys waiting studies to the
    surviving identifier (docs/patients.md), and a retrieved object must say what C-FIND said."""
    values: list[tuple[int, str, Any]] = [(STUDY_INSTANCE_UID, "UI", study.study_instance_uid)]
    if not study.current_truth_applies:
        return values + [
            (0x00100020, "LO", study.patient.patient_id.value),
            (0x00100021, "LO", study.patient.patient_id.issuer.namespace),
        ]
    patient = study.patient
    values += [
        (0x00100010, "PN", patient.name.canonical()),
        (0x00100020, "LO", patient.patient_id.value),
        (0x00100021, "LO", patient.patient_id.issuer.namespace),
        (0x00100030, "DA", patient.birth_date.strftime("%Y%m%d") if patient.birth_date else ""),
        (0x00100040, "CS", patient.sex.value),
        (0x00080050, "SH", study.accession.value),
    ]
    if not study.referring_physician.is_empty():  # the order's (PV1-8) when it names one; never blanked
        values.append((0x00080090, "PN", study.referring_physician.canonical()))
    items = []
    for order in study.orders:
        for step_id in order.step_ids or ("",):
            item = Dataset()
            item.AccessionNumber = order.accession.value
            item.StudyInstanceUID = order.procedure_uid
            item.RequestedProcedureDescription = order.description
            item.RequestedProcedureID = order.procedure_id
            if step_id:
                item.ScheduledProcedureStepID = step_id
            items.append(item)
    if items:
        values.append((REQUEST_ATTRIBUTES_SEQUENCE, "SQ", items))
    return values


def apply_current_truth(
    ds: Dataset, study: StudyRecord, *, modifying_system: str, now: dt.datetime
) -> tuple[str, ...]:
    """Coerce ``ds`` (an outgoing copy) to the study's current truth; return the keywords that changed."""
    wanted = truth_values(study)
    changes = [(tag, vr, value) for tag, vr, value in wanted if not _same(ds, tag, value)]
    if not changes:
        return ()
    old: list[DataElement] = []
    if not _charset_carries(ds, [v for _, vr, v in changes if vr in ("PN", "LO", "SH")]):
        _decode_all(ds)
        old.append(_old_element(ds, SPECIFIC_CHARACTER_SET, "CS"))
        ds.SpecificCharacterSet = UTF8
    for tag, vr, value in changes:
        old.append(_old_element(ds, tag, vr))
        if vr == "SQ":
            ds.add_new(tag, "SQ", DicomSequence(value))
        else:
            ds.add_new(tag, vr, value if value else None)
    modified = Dataset()
    for element in sorted(old, key=lambda e: e.tag):
        modified.add(element)
    record = Dataset()
    record.ModifiedAttributesSequence = DicomSequence([modified])
    record.AttributeModificationDateTime = now.strftime("%Y%m%d%H%M%S")
    record.ModifyingSystem = modifying_system[:64]
    record.SourceOfPreviousValues = None
    record.ReasonForTheAttributeModification = REASON_COERCE
    history = ds.get("OriginalAttributesSequence")
    items = list(history) if history is not None else []
    ds.OriginalAttributesSequence = DicomSequence([*items, record])
    return tuple(str(DataElement(tag, vr, None).keyword) for tag, vr, _ in changes)


def _same(ds: Dataset, tag: int, value: Any) -> bool:
    element = ds.get(tag)
    if isinstance(value, list):
        if element is None or element.VR != "SQ":
            return not value
        return [_item_key(i) for i in element.value] == [_item_key(i) for i in value]
    current = "" if element is None or element.value is None else element.value
    if isinstance(current, (list, tuple, MultiValue)):
        current = "\\".join(str(v) for v in current)
    return str(current).strip() == str(value).strip()


def _item_key(item: Dataset) -> tuple[str, ...]:
    return tuple(
        str(item.get(k, "") or "").strip()
        for k in ("AccessionNumber", "StudyInstanceUID", "RequestedProcedureID", "ScheduledProcedureStepID",
                  "RequestedProcedureDescription")
    )


def _old_element(ds: Dataset, tag: int, vr: str) -> DataElement:
    element = ds.get(tag)
    if element is None:
        return DataElement(tag, vr, DicomSequence() if vr == "SQ" else None)
    return copy.deepcopy(element)


def _charset_carries(ds: Dataset, values: Sequence[Any]) -> bool:
    text = "".join(v for v in values if isinstance(v, str))
    if text.isascii():
        return True
    declared = ds.get("SpecificCharacterSet", "")
    declared = declared if isinstance(declared, str) else "\\".join(declared)
    codec = _CODECS.get(declared.strip())
    if codec is None:
        return False
    try:
        text.encode(codec)
    except UnicodeEncodeError:
        return False
    return True


def _decode_all(ds: Dataset) -> None:
    """Turn every element into its decoded value under the current character set, before the set changes."""
    for element in ds.iterall():
        _ = element.value
