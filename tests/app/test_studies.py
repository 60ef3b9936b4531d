"""Recording instances and reconciling their studies, against a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest
from sqlalchemy import event, func, select

from radsync.adapters.persistence.tables import instance_duplicates, instances, order_timeline
from radsync.domain.errors import InvalidValue, MissingValue
from radsync.domain.identity import Reason
from radsync.domain.ids import EntityId
from radsync.domain.reconciliation import RULE_REQUEST_ATTRIBUTES, RULE_STUDY_UID
from radsync.domain.study import InstanceOutcome, LinkSource, RequestItem, StudyState
from tests.app.imaging import JANE, JOHN, Hub, instance


@pytest.fixture
def hub(engines) -> Hub:  # type: ignore[no-untyped-def]
    return Hub(engines)


def timeline_kinds(hub: Hub) -> list[str]:
    with hub.engines.read.connect() as conn:
        return list(conn.execute(select(order_timeline.c.kind).order_by(order_timeline.c.pk)).scalars())


def test_worklist_study_uid_matches_links_and_completes_the_step(hub: Hub) -> None:
    hub.place("A1", study_uid="1.2.3.100")
    result = hub.store(instance("1.2.3.100"))
    assert (result.outcome, result.study_state, result.new_study) == (
        InstanceOutcome.STORED,
        StudyState.MATCHED,
        True,
    )
    study = hub.run(lambda uow: uow.studies.get("1.2.3.100"))
    assert [(link.accession.value, link.step_ids, link.source, link.rule) for link in study.links] == [
        ("A1", ("SPS1",), LinkSource.AUTO, RULE_STUDY_UID)
    ]
    assert hub.statuses("A1") == ["COMPLETED"]
    assert timeline_kinds(hub) == ["order.created", "study.matched"]
    history = hub.run(lambda uow: uow.studies.history("1.2.3.100"))
    assert [(h.actor, h.rule, h.outcome) for h in history] == [("radsync", RULE_STUDY_UID, "matched")]
    assert history[0].evidence["trigger"] == "instance"
    assert history[0].evidence["progress"] == {"RP1/SPS1": {"from": "SCHEDULED", "to": "COMPLETED"}}


def test_later_instances_follow_the_study_without_a_new_decision(hub: Hub) -> None:
    hub.place("A1", study_uid="1.2.3.100")
    hub.store(instance("1.2.3.100"))
    results = [hub.store(instance("1.2.3.100")) for _ in range(3)]
    assert {(r.outcome, r.study_state, r.new_study, r.decision) for r in results} == {
        (InstanceOutcome.STORED, StudyState.MATCHED, False, None)
    }
    view = hub.run(lambda uow: hub.studies.get_study(uow, "1.2.3.100"))
    assert (view.summary.series_count, view.summary.instance_count, len(view.history)) == (1, 4, 1)


def test_a_known_series_instance_costs_three_statements(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    from radsync.adapters.persistence import fast_sql

    hub.place("A1", study_uid="1.2.3.100")
    hub.store(instance("1.2.3.100"))
    statements: list[str] = []

    def count(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        if not statement.startswith(("BEGIN", "SAVEPOINT", "RELEASE")):
            statements.append(statement.split()[0])

    rows = fast_sql.rows

    def counted_rows(conn, statement, params):  # type: ignore[no-untyped-def]  # the DBAPI fast path skips events
        statements.append(str(statement.compile(dialect=conn.dialect)).split()[0])
        return rows(conn, statement, params)

    monkeypatch.setattr(fast_sql, "rows", counted_rows)
    event.listen(hub.engines.write, "before_cursor_execute", count)
    try:
        hub.store(instance("1.2.3.100"))
    finally:
        event.remove(hub.engines.write, "before_cursor_execute", count)
    if hub.engines.write.dialect.name == "sqlite":
        assert statements == ["SELECT", "INSERT", "UPDATE"]
    else:  # the touch locks the study row first (a split in flight is waited for), then the series is read
        assert statements == ["UPDATE", "SELECT", "INSERT"]


def test_identical_resend_succeeds_and_changes_nothing(hub: Hub) -> None:
    first = instance("1.2.3.100", sop="1.2.3.100.1.1", content=b"original bytes")
    hub.store(first)
    again = hub.store(first)
    assert again.outcome is InstanceOutcome.IDENTICAL_RESEND
    with hub.engines.read.connect() as conn:
        assert conn.execute(select(func.count()).select_from(instances)).scalar() == 1
        assert conn.execute(select(func.count()).select_from(instance_duplicates)).scalar() == 0


def test_same_uid_other_content_keeps_the_original_and_sets_the_newcomer_aside(hub: Hub) -> None:
    original = instance("1.2.3.100", sop="1.2.3.100.1.1", content=b"original bytes")
    changed = instance("1.2.3.100", sop="1.2.3.100.1.1", content=b"edited header")
    hub.store(original)
    result = hub.store(changed)
    assert result.outcome is InstanceOutcome.CONFLICTING_DUPLICATE
    hub.store(changed)  # the same newcomer again is set aside once
    with hub.engines.read.connect() as conn:
        assert conn.execute(select(instances.c.sha256)).scalars().all() == [original.instance.blob.sha256]
        aside = conn.execute(select(instance_duplicates.c.sha256, instance_duplicates.c.blob_key)).all()
    assert aside == [(changed.instance.blob.sha256, changed.instance.blob.key)]


def test_same_sop_uid_in_another_study_is_a_conflicting_duplicate(hub: Hub) -> None:
    hub.store(instance("1.2.3.100", sop="9.9.9.1", content=b"one"))
    assert hub.store(instance("1.2.3.200", sop="9.9.9.1", content=b"two")).outcome is (
        InstanceOutcome.CONFLICTING_DUPLICATE
    )
    assert hub.run(lambda uow: uow.studies.get("1.2.3.200")) is None


def test_wrong_patient_study_uid_is_quarantined_and_the_order_does_not_move(hub: Hub) -> None:
    hub.place("B1", JOHN, study_uid="1.2.3.200")
    result = hub.store(instance("1.2.3.200", patient=JANE))  # John's worklist entry, Jane's header
    assert result.study_state is StudyState.CONFLICT
    assert result.decision is not None and result.decision.reason == Reason.PATIENT_ID_MISMATCH
    assert hub.statuses("B1") == ["SCHEDULED"]
    assert timeline_kinds(hub)[-1] == "study.conflict"
    queue = hub.run(lambda uow: hub.studies.list_studies(uow, StudyState.CONFLICT))
    assert [v.study.study_instance_uid for v in queue] == ["1.2.3.200"]
    assert queue[0].study.links == ()
    assert queue[0].candidates[0].candidate.accession.value == "B1"  # the claimed order, explained


def test_an_instance_of_another_patient_in_a_known_study_is_kept_out_of_it(hub: Hub) -> None:
    hub.place("A1", study_uid="1.2.3.100")
    hub.store(instance("1.2.3.100"))
    result = hub.store(instance("1.2.3.100", patient=JOHN, series="1.2.3.100.2"))
    assert (result.outcome, result.study_state) == (InstanceOutcome.QUARANTINED, StudyState.MATCHED)
    view = hub.run(lambda uow: hub.studies.get_study(uow, "1.2.3.100"))
    assert (view.study.state, view.summary.instance_count, view.summary.quarantined_instances) == (
        StudyState.MATCHED,
        1,
        1,
    )
    assert view.study.header.modalities == ("CT",)  # the quarantined series did not widen the study
    assert [h.outcome for h in view.history] == ["matched", "conflict"]
    conflicts = hub.run(lambda uow: hub.studies.list_studies(uow, StudyState.CONFLICT))
    assert [v.study.study_instance_uid for v in conflicts] == ["1.2.3.100"]


def test_empty_accession_and_three_request_items_link_three_orders(hub: Hub) -> None:
    orders = [hub.place(acc) for acc in ("A1", "A2", "A3")]
    items = tuple(RequestItem(o.accession, "RP1", "SPS1", o.procedures[0].study_instance_uid) for o in orders)
    result = hub.store(instance("1.2.3.300", items=items))
    assert (result.study_state, result.decision.rule) == (StudyState.MATCHED, RULE_REQUEST_ATTRIBUTES)
    study = hub.run(lambda uow: uow.studies.get("1.2.3.300"))
    assert sorted(link.accession.value for link in study.links) == ["A1", "A2", "A3"]
    assert [hub.statuses(acc) for acc in ("A1", "A2", "A3")] == [["COMPLETED"]] * 3


def test_unknown_accession_waits_then_the_late_order_reconciles_it(hub: Hub) -> None:
    first = hub.store(instance("1.2.3.400", accession="A9"))
    assert (first.study_state, first.decision.reason) == (StudyState.UNASSIGNED, Reason.UNKNOWN_ACCESSION)
    hub.place("A9")  # the ORM arrives after the images
    study = hub.run(lambda uow: uow.studies.get("1.2.3.400"))
    assert study.state is StudyState.MATCHED
    assert [link.accession.value for link in study.links] == ["A9"]
    assert hub.statuses("A9") == ["COMPLETED"]
    history = hub.run(lambda uow: uow.studies.history("1.2.3.400"))
    assert [(h.outcome, h.evidence["trigger"]) for h in history] == [
        ("unassigned", "instance"),
        ("matched", "order_placed"),
    ]


def test_an_unrelated_order_leaves_the_unassigned_study_and_its_history_alone(hub: Hub) -> None:
    hub.store(instance("1.2.3.400", accession="A9"))
    hub.place("A1", modality="MR")  # same patient, nothing that names the study
    assert hub.run(lambda uow: uow.studies.get("1.2.3.400")).state is StudyState.UNASSIGNED
    assert len(hub.run(lambda uow: uow.studies.history("1.2.3.400"))) == 1


def test_a_study_split_over_two_associations_twenty_minutes_apart_is_one_study(hub: Hub) -> None:
    hub.place("A1", study_uid="1.2.3.100")
    hub.store(instance("1.2.3.100"))
    hub.store(instance("1.2.3.100"))
    hub.now += dt.timedelta(minutes=20)
    late = [hub.store(instance("1.2.3.100", series="1.2.3.100.2")) for _ in range(2)]
    assert {(r.outcome, r.study_state, r.new_study) for r in late} == {
        (InstanceOutcome.STORED, StudyState.MATCHED, False)
    }
    view = hub.run(lambda uow: hub.studies.get_study(uow, "1.2.3.100"))
    assert (view.summary.series_count, view.summary.instance_count) == (2, 4)
    assert view.summary.last_received_at - view.summary.received_at == dt.timedelta(minutes=20)
    assert len(view.history) == 1 and len(view.study.links) == 1


def test_later_association_of_a_manually_fixed_study_follows_the_fix(hub: Hub) -> None:
    hub.place("A1")
    hub.store(instance("1.2.3.500", accession="TYPO1"))
    hub.run(lambda uow: hub.studies.reconcile_manually(uow, _manual("1.2.3.500", "A1")))
    hub.now += dt.timedelta(minutes=10)
    late = hub.store(instance("1.2.3.500", accession="TYPO1", series="1.2.3.500.2"))
    assert (late.outcome, late.study_state, late.decision) == (
        InstanceOutcome.STORED,
        StudyState.MATCHED,
        None,
    )


def test_a_new_series_with_request_items_reconciles_an_unassigned_study(hub: Hub) -> None:
    order = hub.place("A1")
    hub.place("A2")  # two open CT orders: the patient rule cannot choose
    first = hub.store(instance("1.2.3.600"))
    assert first.decision.reason == Reason.SEVERAL_CANDIDATES
    item = RequestItem(EntityId("A1"), "RP1", "SPS1", order.procedures[0].study_instance_uid)
    second = hub.store(instance("1.2.3.600", series="1.2.3.600.2", items=(item,)))
    assert second.study_state is StudyState.MATCHED
    assert hub.statuses("A1") == ["COMPLETED"] and hub.statuses("A2") == ["SCHEDULED"]


def test_a_new_series_naming_another_order_extends_a_matched_study(hub: Hub) -> None:
    hub.place("A1", study_uid="1.2.3.700")
    other = hub.place("A2", modality="MR")
    hub.store(instance("1.2.3.700"))
    item = RequestItem(EntityId("A2"), "RP1", "SPS1", other.procedures[0].study_instance_uid)
    hub.store(instance("1.2.3.700", series="1.2.3.700.2", modality="MR", items=(item,)))
    study = hub.run(lambda uow: uow.studies.get("1.2.3.700"))
    assert sorted(link.accession.value for link in study.links) == ["A1", "A2"]
    assert hub.statuses("A2") == ["COMPLETED"]


def test_patient_modality_and_date_match_only_when_exactly_one_order_fits(hub: Hub) -> None:
    hub.place("A1", modality="MR")
    one = hub.store(instance("1.2.3.800", modality="MR"))
    assert one.study_state is StudyState.MATCHED
    hub.place("A2", modality="CT")
    hub.place("A3", modality="CT")
    two = hub.store(instance("1.2.3.801", modality="CT"))
    assert (two.study_state, two.decision.reason) == (StudyState.UNASSIGNED, Reason.SEVERAL_CANDIDATES)


def test_instances_need_their_uids(hub: Hub) -> None:
    with pytest.raises(MissingValue):
        hub.store(instance(""))
    bad = instance("1.2.3.100")
    with pytest.raises(MissingValue):
        hub.store(replace(bad, instance=replace(bad.instance, sop_instance_uid="")))


def test_a_series_uid_reused_under_another_study_is_refused(hub: Hub) -> None:
    hub.store(instance("1.2.3.100", series="5.5.5"))
    with pytest.raises(InvalidValue):
        hub.store(instance("1.2.3.101", series="5.5.5"))


def _manual(study_uid: str, accession: str):  # type: ignore[no-untyped-def]
    from radsync.app.reconcile import ManualReconcile

    return ManualReconcile(study_uid, EntityId(accession), actor="alice", reason="typo at the console")
