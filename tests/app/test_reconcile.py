"""The Unassigned queue and operator actions: candidates, manual link, unlink, history."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from radsync.adapters.persistence.tables import order_timeline
from radsync.app.reconcile import ManualReconcile, Unlink
from radsync.domain.errors import UnknownOrder
from radsync.domain.identity import Reason
from radsync.domain.ids import EntityId
from radsync.domain.reconciliation import RULE_MANUAL
from radsync.domain.study import LinkSource, RequestItem, StudyState, UnknownStudy
from tests.app.imaging import JOHN, Hub, instance


@pytest.fixture
def hub(engines) -> Hub:  # type: ignore[no-untyped-def]
    return Hub(engines)


def manual(
    hub: Hub, study_uid: str, accession: str, actor: str = "alice", reason: str = "checked with the tech"
):
    return hub.run(
        lambda uow: hub.studies.reconcile_manually(
            uow, ManualReconcile(study_uid, EntityId(accession), actor, reason)
        )
    )


def unlink(hub: Hub, study_uid: str, accession: str | None = None):  # type: ignore[no-untyped-def]
    return hub.run(
        lambda uow: hub.studies.unlink(
            uow, Unlink(study_uid, "bob", "wrong order", EntityId(accession) if accession else None)
        )
    )


def test_unassigned_queue_lists_the_reason_and_ranked_explained_candidates(hub: Hub) -> None:
    hub.place("ACC1234")
    hub.place("ZZZ0001", JOHN)
    hub.store(instance("1.2.3.500", accession="ACC1243", name="Doe^Jnae"))  # transposed digits and letters
    queue = hub.run(lambda uow: hub.studies.list_studies(uow, StudyState.UNASSIGNED))
    assert [(v.study.study_instance_uid, v.study.reason) for v in queue] == [
        ("1.2.3.500", Reason.UNKNOWN_ACCESSION)
    ]
    best = queue[0].candidates[0]
    assert best.candidate.accession.value == "ACC1234"
    components = {c.name: (c.score, c.detail) for c in best.components}
    assert components["accession"][1] == "1 edit(s) apart"
    assert components["patient_id"] == (1.0, "equal")
    assert 0 < components["name"][0] < 1
    assert [c.candidate.accession.value for c in queue[0].candidates][-1] == "ZZZ0001"
    assert queue[0].candidates[0].score > queue[0].candidates[-1].score


def test_manual_reconcile_links_moves_the_order_and_records_who_when_why(hub: Hub) -> None:
    hub.place("A1")
    hub.store(instance("1.2.3.500", accession="TYPO1"))
    view = manual(hub, "1.2.3.500", "A1")
    assert view.study.state is StudyState.MATCHED
    assert [(link.accession.value, link.source, link.rule) for link in view.study.links] == [
        ("A1", LinkSource.MANUAL, RULE_MANUAL)
    ]
    assert hub.statuses("A1") == ["COMPLETED"]
    last = view.history[-1]
    assert (last.actor, last.rule, last.outcome, last.at) == ("alice", RULE_MANUAL, "matched", hub.now)
    assert last.evidence["why"] == "checked with the tech" and last.evidence["previous_state"] == "unassigned"
    assert view.candidates == ()  # matched studies need no suggestions


def test_manual_reconcile_fixes_a_conflict_by_applying_the_orders_patient(hub: Hub) -> None:
    hub.place("B1", JOHN, study_uid="1.2.3.200")
    hub.store(instance("1.2.3.200"))  # Jane's header on John's study UID -> CONFLICT
    view = manual(hub, "1.2.3.200", "B1", reason="confirmed: John was scanned, header typed wrong")
    assert view.study.state is StudyState.MATCHED
    assert view.history[-1].evidence["rules"][0]["identity"]
    assert hub.statuses("B1") == ["COMPLETED"]


def test_repeating_a_manual_reconcile_changes_nothing(hub: Hub) -> None:
    hub.place("A1")
    hub.store(instance("1.2.3.500", accession="TYPO1"))
    manual(hub, "1.2.3.500", "A1")
    again = manual(hub, "1.2.3.500", "A1")
    assert len(again.history) == 2 and len(again.study.links) == 1


def test_manual_reconcile_of_unknown_things_is_refused(hub: Hub) -> None:
    hub.store(instance("1.2.3.500", accession="TYPO1"))
    with pytest.raises(UnknownOrder):
        manual(hub, "1.2.3.500", "NOPE")
    with pytest.raises(UnknownStudy):
        manual(hub, "9.9.9", "A1")


def test_unlink_returns_the_study_to_the_queue_and_says_so_on_the_order(hub: Hub) -> None:
    hub.place("A1", study_uid="1.2.3.100")
    hub.store(instance("1.2.3.100"))
    view = unlink(hub, "1.2.3.100")
    assert (view.study.state, view.study.reason, view.study.links) == (
        StudyState.UNASSIGNED,
        Reason.UNLINKED,
        (),
    )
    assert (view.history[-1].actor, view.history[-1].evidence["why"]) == ("bob", "wrong order")
    assert hub.statuses("A1") == ["COMPLETED"]  # the acquisition happened; the table has no way back
    with hub.engines.read.connect() as conn:
        assert conn.execute(select(order_timeline.c.kind).order_by(order_timeline.c.pk.desc())).first()[
            0
        ] == ("study.unlinked")


def test_unlink_one_order_of_a_grouped_study_keeps_the_others(hub: Hub) -> None:
    orders = [hub.place(acc) for acc in ("A1", "A2")]
    items = tuple(RequestItem(o.accession, "RP1", "SPS1", o.procedures[0].study_instance_uid) for o in orders)
    hub.store(instance("1.2.3.300", items=items))
    view = unlink(hub, "1.2.3.300", "A2")
    assert view.study.state is StudyState.MATCHED
    assert [link.accession.value for link in view.study.links] == ["A1"]
    with pytest.raises(UnknownOrder):
        unlink(hub, "1.2.3.300", "A2")


def test_sweep_picks_up_what_a_race_left_unassigned(hub: Hub) -> None:
    hub.store(instance("1.2.3.400", accession="A9"))
    # Simulate the race: the order lands without the hook (another node, a concurrent transaction).
    hub.orders._on_placed = None
    hub.place("A9")
    assert hub.run(lambda uow: uow.studies.get("1.2.3.400")).state is StudyState.UNASSIGNED
    assert hub.run(lambda uow: hub.reconciler.sweep(uow, since=hub.now)) == ["1.2.3.400"]
    assert hub.statuses("A9") == ["COMPLETED"]


def test_sweep_looks_only_at_recent_studies(hub: Hub) -> None:
    """Old unassigned studies wait for an operator; they never crowd the recent ones out of the sweep."""
    hub.orders._on_placed = None
    hub.store(instance("1.2.3.401", accession="OLD"))
    hub.now += dt.timedelta(hours=1)
    hub.store(instance("1.2.3.402", accession="NEW"))
    hub.place("OLD")
    hub.place("NEW")
    since = hub.now - dt.timedelta(minutes=15)
    assert hub.run(lambda uow: hub.reconciler.sweep(uow, since=since, limit=1)) == ["1.2.3.402"]
    assert hub.run(lambda uow: uow.studies.get("1.2.3.401")).state is StudyState.UNASSIGNED
