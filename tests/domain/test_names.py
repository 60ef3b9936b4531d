from __future__ import annotations

import pytest

from radsync.domain.names import NameGroup, PersonName, fold


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        (PersonName.of("Doe", "Jane"), "Doe^Jane"),
        (PersonName.of("Doe", "Jane", "", "Mrs"), "Doe^Jane^^Mrs"),
        (PersonName(NameGroup("Yamada", "Taro"), NameGroup("山田", "太郎"), NameGroup("やまだ", "たろう")),
         "Yamada^Taro=山田^太郎=やまだ^たろう"),
        (PersonName(NameGroup(), NameGroup("山田", "太郎")), "=山田^太郎"),
        (PersonName(), ""),
    ],
)
def test_canonical_form_round_trips(name: PersonName, canonical: str) -> None:
    assert name.canonical() == canonical
    assert PersonName.from_canonical(canonical) == name


@pytest.mark.parametrize(("a", "b"), [("Müller", "MULLER"), ("Zoë Ñúñez", "zoe nunez"), ("O'Brien", "o'brien")])
def test_fold_ignores_case_and_accents(a: str, b: str) -> None:
    assert fold(a) == fold(b)


def test_fold_keeps_different_letters_apart() -> None:
    assert fold("Muller") != fold("Moller")
