"""String similarity for names and identifiers: tolerant of typos and transposed letters.

Damerau–Levenshtein (optimal string alignment) counts an insertion, deletion, substitution or a swap of two
adjacent characters as one edit, so ``JAEN`` is one edit from ``JANE`` -- the commonest typing error at a
modality console. Names are compared after folding (case, accents) and with spaces and punctuation dropped,
so ``O'Brien`` and ``OBRIEN`` are equal.
"""

from __future__ import annotations

from radsync.domain.names import PersonName, fold


def damerau_levenshtein(a: str, b: str) -> int:
    """Edit distance where an adjacent transposition costs one (optimal string alignment variant)."""
    if a == b:
        return 0
    if not a or not b:
        return max(len(a), len(b))
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, start=1):
            cost = 0 if ca == cb else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return previous[len(b)]


def similarity(a: str, b: str) -> float:
    """1.0 for equal strings, falling linearly with the edit distance; 0.0 when either is empty."""
    if not a or not b:
        return 0.0
    return max(0.0, 1.0 - damerau_levenshtein(a, b) / max(len(a), len(b)))


def comparable(text: str) -> str:
    """Folded, with everything but letters and digits dropped."""
    return "".join(ch for ch in fold(text) if ch.isalnum())


def name_parts(name: PersonName) -> tuple[str, str]:
    """(family, given) of the alphabetic representation, comparable."""
    group = name.alphabetic
    return comparable(group.family), comparable(group.given)


def name_similarity(a: PersonName, b: PersonName) -> float:
    """Similarity of family+given names, also trying the two swapped (a console with the fields reversed)."""
    fa, ga = name_parts(a)
    fb, gb = name_parts(b)
    if not (fa or ga) or not (fb or gb):
        return 0.0
    straight = similarity(fa + ga, fb + gb)
    swapped = similarity(ga + fa, fb + gb)
    return max(straight, swapped)


def names_within(a: PersonName, b: PersonName, max_edits: int, *, allow_swap: bool) -> bool | None:
    """Whether family and given names agree within ``max_edits`` each; ``None`` if not comparable.

    ``allow_swap`` also accepts family and given names entered the other way round.

    A given name missing on one side is not held against the match: consoles often keep only the family name.
    """
    fa, ga = name_parts(a)
    fb, gb = name_parts(b)
    if not fa or not fb:
        return None

    def close(x: str, y: str) -> bool:
        return damerau_levenshtein(x, y) <= max_edits

    def given_ok(x: str, y: str) -> bool:
        return not x or not y or close(x, y)

    straight = close(fa, fb) and given_ok(ga, gb)
    swapped = allow_swap and bool(ga) and bool(gb) and close(fa, gb) and close(ga, fb)
    return straight or swapped
