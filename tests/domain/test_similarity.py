"""Typo-tolerant comparison of names and identifiers."""

from __future__ import annotations

import pytest

from radsync.domain.names import PersonName
from radsync.domain.similarity import damerau_levenshtein, name_similarity, names_within, similarity


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [
        ("", "", 0),
        ("ABC", "", 3),
        ("JANE", "JANE", 0),
        ("JANE", "JAEN", 1),
        ("JANE", "JNAE", 1),
        ("JANE", "JANET", 1),
        ("JANE", "JUNE", 1),
        ("CA", "ABC", 3),
        ("SMITH", "SMYTHE", 2),
    ],
)
def test_damerau_levenshtein(a: str, b: str, distance: int) -> None:
    assert damerau_levenshtein(a, b) == distance
    assert damerau_levenshtein(b, a) == distance


def test_similarity_is_one_for_equal_and_zero_for_empty() -> None:
    assert similarity("A100", "A100") == 1.0
    assert similarity("", "A100") == 0.0
    assert similarity("A100", "A010") == pytest.approx(0.75)


def test_names_compare_after_folding_and_without_punctuation() -> None:
    assert names_within(
        PersonName.of("O'Brien", "Séan"), PersonName.of("OBRIEN", "SEAN"), 0, allow_swap=False
    )
    assert (
        names_within(PersonName.of("Doe", "Jane"), PersonName.of("Jane", "Doe"), 0, allow_swap=False) is False
    )
    assert names_within(PersonName.of("Doe", "Jane"), PersonName.of("Jane", "Doe"), 0, allow_swap=True)
    assert names_within(PersonName(), PersonName.of("Doe"), 0, allow_swap=False) is None


def test_name_similarity_tolerates_swapped_components() -> None:
    assert name_similarity(PersonName.of("Doe", "Jane"), PersonName.of("Jane", "Doe")) == 1.0
    assert 0.8 < name_similarity(PersonName.of("Doe", "Jnae"), PersonName.of("Doe", "Jane")) < 1.0
