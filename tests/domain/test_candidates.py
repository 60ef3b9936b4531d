"""Ranked, explained candidate orders for the Unassigned queue."""

from __future__ import annotations

import datetime as dt

from radsync.domain.candidates import WEIGHTS, rank, score
from tests.domain.test_reconciliation import AT, JANE, JOHN, proc, subject


def test_weights_add_up_to_one() -> None:
    assert abs(sum(WEIGHTS.values()) - 1.0) < 1e-9


def test_typo_in_accession_and_name_still_ranks_the_right_order_first() -> None:
    right = proc("2.25.1", "ACC1234")
    other = proc("2.25.2", "XYZ9", JOHN)
    ranked = rank(subject(accession="ACC1243", name="Deo^Jane", pid="P1"), [other, right])
    assert [r.candidate.procedure_uid for r in ranked] == ["2.25.1", "2.25.2"]
    best = {c.name: c for c in ranked[0].components}
    assert best["accession"].detail == "1 edit(s) apart"
    assert best["name"].detail == "similar" and 0 < best["name"].score < 1
    assert best["patient_id"].score == 1.0 and best["birth_date"].score == 1.0


def test_every_component_is_listed_and_the_total_is_their_weighted_sum() -> None:
    scored = score(subject("2.25.1", accession="A1"), proc("2.25.1", "A1"))
    assert [c.name for c in scored.components] == list(WEIGHTS)
    assert scored.score == round(sum(c.score * c.weight for c in scored.components), 4) == 1.0


def test_day_month_swap_in_birth_date_is_half_a_match() -> None:
    scored = score(subject(birth=dt.date(1980, 4, 3)), proc("2.25.1", "A1"))
    assert {c.name: c.score for c in scored.components}["birth_date"] == 0.5


def test_date_proximity_decays_over_the_window() -> None:
    late = proc("2.25.1", "A1", start=AT + dt.timedelta(days=3))
    scored = score(subject(), late, window_days=6)
    date = next(c for c in scored.components if c.name == "date")
    assert date.score == 0.5 and date.detail == "3 day(s) from the scheduled date"


def test_rank_drops_zero_scores_and_limits() -> None:
    nobody = proc("2.25.9", "", JOHN, modality="US", start=AT + dt.timedelta(days=30))
    ranked = rank(
        subject(pid="", name="", birth=None),
        [nobody] + [proc(f"2.25.{i}", f"A{i}") for i in range(8)],
        limit=3,
    )
    assert len(ranked) == 3 and all(r.candidate.patient is JANE for r in ranked)
