"""Character sets of worklist answers: one per station, with transliteration for stations that cannot do Unicode.

The MWL SCP may answer in another character set than the modality asked in (PS3.4 K.4.1.1.3.2, MAPPING.md §2.4), so
radsync answers each station in the set configured for it (``[[stations]] charset``, looked up by calling AE title;
an unknown caller gets ISO_IR 192):

* ``ISO_IR 192``: UTF-8, everything as stored; (0008,0005) = ``ISO_IR 192``.
* ``ISO_IR 100``: Latin-1; characters it cannot carry are transliterated (``Ł`` -> ``L``, ``ő`` -> ``o``).
* ``ASCII``: the default repertoire, no (0008,0005); every value is transliterated to ASCII and person names are
  also upper-cased, the way ASCII-only modalities show them (``Müller^Zoë`` -> ``MULLER^ZOE``).

Person name groups that cannot be carried at all (ideographic and phonetic groups on a Latin station) are dropped
rather than sent as ``?``. Each value changed is counted in ``radsync_mwl_transliterated_total{charset}``.
Character bytes come from pydicom (``pydicom.charset.encode_string``), never hand-made.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from functools import lru_cache

from prometheus_client import Counter
from pydicom.charset import convert_encodings, decode_bytes, encode_string, python_encoding

DEFAULT_CHARSET = "ISO_IR 192"

TRANSLITERATED = Counter(
    "radsync_mwl_transliterated",
    "Worklist answer values changed because the station's character set cannot carry every character",
    ["charset"],
)

# Letters NFKD does not decompose into a base letter plus marks.
_SPECIAL = {
    "ß": "ss", "ẞ": "SS", "Æ": "AE", "æ": "ae", "Œ": "OE", "œ": "oe", "Ø": "O", "ø": "o", "Ł": "L", "ł": "l",
    "Đ": "D", "đ": "d", "Ð": "D", "ð": "d", "Þ": "TH", "þ": "th", "ı": "i", "Ħ": "H", "ħ": "h", "Ŧ": "T",
    "ŧ": "t", "ĸ": "q", "Ŋ": "N", "ŋ": "n", "‘": "'", "’": "'", "‚": ",", "“": '"', "”": '"', "„": '"',
    "–": "-", "—": "-", "…": "...", "€": "EUR", "\u00a0": " ",
}

_CODECS = {"ISO_IR 192": "utf-8", "ISO_IR 100": "latin-1", "ASCII": "ascii"}


class ResponseCharset:
    """How the answers for one station are encoded."""

    def __init__(self, name: str) -> None:
        if name not in _CODECS:
            raise ValueError(f"unsupported response character set {name!r}")
        self.name = name
        # The (0008,0005) value, or None for the default repertoire (attribute omitted).
        self.specific_character_set: str | None = None if name == "ASCII" else name
        self.upper_case_names = name == "ASCII"
        self._codec = _CODECS[name]
        # What pydicom uses to encode and what Dataset._character_set reports for these datasets.
        self.encodings: list[str] = convert_encodings(self.specific_character_set or "ISO_IR 6")
        self._metric = TRANSLITERATED.labels(charset=name)

    def _carries(self, text: str) -> bool:
        try:
            text.encode(self._codec)
        except UnicodeEncodeError:
            return False
        return True

    def text(self, value: str) -> bytes:
        """Encode a text value (SH, LO, ST, LT, UT, UC), transliterating what the set cannot carry."""
        if not self._carries(value):
            value = transliterate(value, self._codec)
            self._metric.inc()
        return encode_string(value, self.encodings)

    def person_name(self, value: str) -> bytes:
        """Encode a PN value: transliterated per component group; groups that cannot be carried are dropped."""
        if self.upper_case_names:
            value = value.upper()  # policy for ASCII stations, not counted as a transliteration
        if not self._carries(value):
            groups = value.split("=")
            kept = [transliterate(groups[0], self._codec)]
            for group in groups[1:]:
                candidate = transliterate(group, self._codec)
                kept.append(candidate if "?" not in candidate or "?" in group else "")
            while len(kept) > 1 and not kept[-1]:
                kept.pop()
            value = "=".join(kept)
            self._metric.inc()
        return encode_string(value, self.encodings)


@lru_cache(maxsize=8)
def response_charset(name: str) -> ResponseCharset:
    return ResponseCharset(name)


@lru_cache(maxsize=4096)
def transliterate(text: str, codec: str) -> str:
    """Replace characters ``codec`` cannot encode by their closest base letters, or ``?`` when there is none."""
    out = []
    for ch in text:
        try:
            ch.encode(codec)
            out.append(ch)
            continue
        except UnicodeEncodeError:
            pass
        replacement = _SPECIAL.get(ch)
        if replacement is None:
            replacement = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
        try:
            replacement.encode(codec)
        except UnicodeEncodeError:
            replacement = ""
        out.append(replacement or "?")
    return "".join(out)


# -- decoding queries --------------------------------------------------------------------------------------------

_SINGLE_BYTE_OR_UTF8 = {"UTF8", "utf_8", "iso8859", "latin_1"}


def query_encodings(specific_character_set: Sequence[str] | str | None) -> tuple[list[str], bool]:
    """Python encodings for a request's (0008,0005) and whether radsync knows every term.

    An unknown term falls back to the default repertoire: matching then works on the ASCII part only, which is
    the usual behaviour PS3.4 leaves open (MAPPING.md §3.2 rule 12).
    """
    terms = [specific_character_set] if isinstance(specific_character_set, str) else list(specific_character_set or [])
    terms = [t.strip() for t in terms]
    if not terms or not terms[0]:
        terms = ["ISO_IR 6", *terms[1:]]
    known = all(t in python_encoding for t in terms if t)
    if not known:
        return ["iso8859"], False
    return convert_encodings(terms), True


def decode_text(raw: bytes, encodings: list[str], delimiters: set[int]) -> str:
    """Decode a request value. Bytes that are not valid in the declared set are read as Windows-1252/Latin-1.

    Why: modalities label Latin-1 as UTF-8 and the reverse (FIELD-NOTES C.22); a query must still match.
    """
    if len(encodings) == 1 and encodings[0] in _SINGLE_BYTE_OR_UTF8:
        try:
            return raw.decode("utf-8" if encodings[0] in ("UTF8", "utf_8") else "latin-1")
        except UnicodeDecodeError:
            try:
                return raw.decode("cp1252")
            except UnicodeDecodeError:
                return raw.decode("latin-1")
    return decode_bytes(raw, encodings, delimiters)
