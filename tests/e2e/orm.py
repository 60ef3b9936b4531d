"""ORM^O01 messages for end-to-end tests (IHE RAD-4 field positions, MAPPING.md §9.1)."""

from __future__ import annotations


def orm_new(n: int, *, control_id: str | None = None, modality: str = "CT", start: str = "20240612083000") -> str:
    """A complete NW order number ``n``: patient P<n>, accession A<n>, one step SPS<n>."""
    segments = [
        f"MSH|^~\\&|HIS|GENHOSP|RADSYNC|RADDEPT|20240611093015||ORM^O01|{control_id or f'MSG{n:06d}'}|P|2.3.1",
        f"PID|1||P{n:06d}^^^GENHOSP^MR||Doe{n}^Jane^Marie^^Mrs||19700412|F",
        "PV1|1|O|RADOPD^X1^^GENHOSP||||||||||||||||V1^^^GENHOSP^VN",
        f"ORC|NW|PLC{n}^HIS|FIL{n}^RIS||SC||1^once^^{start}^^R||20240611093010",
        f"OBR|1|PLC{n}^HIS|FIL{n}^RIS|71250^CT thorax^C4^P-CT^Chest routine^99RADPROT||||||||||||||"
        f"A{n:06d}|RP{n}|SPS{n}||||{modality}|||1^once^^{start}^^R||||||||||||||||||RP-CT^CT chest^99RADPROC",
    ]
    return "\r".join(segments) + "\r"
