"""Person names: the one shape behind HL7 XPN/XCN, DICOM PN and FHIR HumanName.

A name has up to three representations (alphabetic, ideographic, phonetic), as DICOM PN component groups
and HL7 XPN.8 name representation codes do. Each group has five components in DICOM order
(family, given, middle, prefix, suffix); the HL7 adapter swaps XPN's suffix/prefix order on the way in.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

_COMPONENTS = ("family", "given", "middle", "prefix", "suffix")


@dataclass(frozen=True, slots=True)
class NameGroup:
    """One representation of a name, components in DICOM PN order."""

    family: str = ""
    given: str = ""
    middle: str = ""
    prefix: str = ""
    suffix: str = ""

    def components(self) -> tuple[str, str, str, str, str]:
        return (self.family, self.given, self.middle, self.prefix, self.suffix)

    def is_empty(self) -> bool:
        return not any(self.components())

    def joined(self, separator: str = "^") -> str:
        """Components joined with trailing empty components dropped (``Doe^Jane^^^`` is ``Doe^Jane``)."""
        parts = list(self.components())
        while parts and not parts[-1]:
            parts.pop()
        return separator.join(parts)

    @classmethod
    def from_joined(cls, text: str, separator: str = "^") -> NameGroup:
        parts = (text.split(separator) + [""] * 5)[:5]
        return cls(*parts)


@dataclass(frozen=True, slots=True)
class PersonName:
    """A person's name in up to three representations."""

    alphabetic: NameGroup = NameGroup()
    ideographic: NameGroup = NameGroup()
    phonetic: NameGroup = NameGroup()

    def is_empty(self) -> bool:
        return self.alphabetic.is_empty() and self.ideographic.is_empty() and self.phonetic.is_empty()

    def canonical(self) -> str:
        """``alphabetic=ideographic=phonetic`` with trailing empty groups dropped; stable for comparison."""
        groups = [self.alphabetic.joined(), self.ideographic.joined(), self.phonetic.joined()]
        while len(groups) > 1 and not groups[-1]:
            groups.pop()
        return "=".join(groups)

    @classmethod
    def from_canonical(cls, text: str) -> PersonName:
        groups = (text.split("=") + ["", ""])[:3]
        return cls(*(NameGroup.from_joined(g) for g in groups))

    @classmethod
    def of(cls, family: str = "", given: str = "", middle: str = "", prefix: str = "", suffix: str = "") -> PersonName:
        return cls(NameGroup(family, given, middle, prefix, suffix))


def fold(text: str) -> str:
    """Case- and accent-insensitive form used for name matching (``Müller`` and ``MULLER`` fold alike).

    Why: modalities type names in capitals without accents, and PS3.4 leaves PN matching sensitivity to the
    SCP; radsync matches names case- and accent-insensitively and says so in its conformance statement.
    """
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))
