"""Grouped procedures (issue 5 §4) and link corrections to the RIS (§3) through the use cases, SQLite and PostgreSQL.

Orders are placed through OrderService, images recorded through StudyService, and the outbox rows read back and
parsed with python-hl7 as the RIS would (test_reports.OutboundHub wires the outbox as the composition root does).
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from radsync.adapters.persistence.tables import order_timeline, orders, reports
from radsync.app.reconcile import LinkOrder, Split, Unlink
from radsync.app.studies import StudyView
from radsync.domain.errors import IdentityConflict, InvalidValue, MissingValue, UnknownOrder
from radsync.domain.ids import EntityId, Issuer, PatientId
from radsync.domain.report import ReportStatus, ReportStatusRefused
from radsync.domain.study import StudyState
from tests.app.imaging import JANE, JOHN, instance
from tests.app.test_reports import OutboundHub, queued

STUDY = "1.2.3.600"
CT_SERIES, MR_SERIES = f"{STUDY}.1", f"{STUDY}.2"


@pytest.fixture
def hub(engines) -> OutboundHub:  # type: ignore[no-untyped-def]
    return OutboundHub(engines)


def link(hub: OutboundHub, accession: str, uid: str = STUDY) -> StudyView:
    command = LinkOrder(uid, EntityId(accession), "alice", "chest and ribs scanned together")
    return hub.run(lambda uow: hub.studies.link_order(uow, command))


def split(hub: OutboundHub, accession: str, *series: str, new_uid: str = "") -> StudyView:
    command = Split(STUDY, series, EntityId(accession), "alice", "MR belongs to the other order", new_uid)
    return hub.run(lambda uow: hub.studies.split(uow, command))


def status_messages(hub: OutboundHub) -> list[Any]:
    return [m for _, m in queued(hub.engines, "ORM^O01")]


def obx_uids(message: Any) -> list[str]:
    return [str(s[5]) for s in message if str(s[0]) == "OBX" and str(s[3]).startswith("113014")]


def timeline(hub: OutboundHub, accession: str) -> list[tuple[str, dict[str, Any]]]:
    with hub.engines.read.connect() as conn:
        rows = conn.execute(
            select(order_timeline.c.kind, order_timeline.c.detail)
            .join(orders, orders.c.pk == order_timeline.c.order_pk)
            .where(orders.c.accession == accession)
            .order_by(order_timeline.c.pk)
        ).all()
    return [(r.kind, r.detail) for r in rows]


def two_series_study(hub: OutboundHub) -> None:
    """Order A1 (CT) with STUDY: a CT series and an MR series arrive; A2 (MR) and B1 (John's) are open."""
    hub.place("A1", study_uid=STUDY)
    hub.place("A2", modality="MR")
    hub.place("B1", JOHN)
    hub.store(instance(STUDY, series=CT_SERIES))
    hub.store(instance(STUDY, series=MR_SERIES, modality="MR"))


def test_link_order_groups_a_second_order_completes_it_and_tells_its_ris(hub: OutboundHub) -> None:
    two_series_study(hub)
    before = len(status_messages(hub))

    view = link(hub, "A2")

    assert view.study.state is StudyState.MATCHED
    assert sorted(link.accession.value for link in view.study.links) == ["A1", "A2"]
    assert hub.statuses("A2") == ["COMPLETED"]  # every linked order advances
    [message] = status_messages(hub)[before:]
    assert (str(message.segment("OBR")[18]), str(message.segment("ORC")[5])) == ("A2", "CM")
    assert obx_uids(message) == [STUDY]
    last = view.history[-1]
    assert (last.actor, last.evidence["why"]) == ("alice", "chest and ribs scanned together")
    assert last.evidence["links"] == {"old": ["A1"], "new": ["A1", "A2"]}
    kinds = [kind for kind, _ in timeline(hub, "A2")]
    assert "study.linked" in kinds and kinds[-1] == "study.link_changed"
    assert timeline(hub, "A2")[-1][1]["studies"] == {"old": [], "new": [STUDY]}


def test_linking_an_order_already_complete_still_sends_the_new_study_uid(hub: OutboundHub) -> None:
    two_series_study(hub)
    other = "1.2.3.601"
    link(hub, "A2")
    hub.store(instance(other, modality="MR", accession="TYPO"))
    assert hub.run(lambda uow: uow.studies.get(other)).state is StudyState.UNASSIGNED
    before = len(status_messages(hub))

    link(hub, "A2", uid=other)  # A2 was CM already: no progress message, so the correction says it

    [message] = status_messages(hub)[before:]
    assert str(message.segment("ORC")[5]) == "CM"
    assert sorted(obx_uids(message)) == sorted([STUDY, other])


def test_link_order_of_another_patient_is_refused_and_changes_nothing(hub: OutboundHub) -> None:
    two_series_study(hub)
    before = len(status_messages(hub))
    with pytest.raises(IdentityConflict):
        link(hub, "B1")
    assert hub.statuses("B1") == ["SCHEDULED"]
    assert len(status_messages(hub)) == before
    view = hub.run(lambda uow: hub.studies.get_study(uow, STUDY))
    assert [link.accession.value for link in view.study.links] == ["A1"]


def test_linking_twice_is_a_no_op_and_an_unknown_order_is_404(hub: OutboundHub) -> None:
    two_series_study(hub)
    link(hub, "A2")
    before = (len(status_messages(hub)), len(timeline(hub, "A2")))
    link(hub, "A2")
    assert (len(status_messages(hub)), len(timeline(hub, "A2"))) == before
    with pytest.raises(UnknownOrder):
        link(hub, "NOPE")


def test_unlink_one_order_keeps_the_other_and_tells_the_ris(hub: OutboundHub) -> None:
    two_series_study(hub)
    link(hub, "A2")
    before = len(status_messages(hub))

    command = Unlink(STUDY, "bob", "A2 was not performed here", EntityId("A2"))
    view = hub.run(lambda uow: hub.studies.unlink(uow, command))

    assert view.study.state is StudyState.MATCHED
    assert [link.accession.value for link in view.study.links] == ["A1"]
    assert view.history[-1].evidence["links"] == {"old": ["A1", "A2"], "new": ["A1"]}
    [message] = status_messages(hub)[before:]
    assert str(message.segment("OBR")[18]) == "A2" and obx_uids(message) == []  # no study fulfils A2 now
    kind, detail = timeline(hub, "A2")[-1]
    assert (kind, detail["actor"], detail["why"]) == ("study.unlinked", "bob", "A2 was not performed here")
    assert detail["studies"] == {"old": [STUDY], "new": []}


def test_split_moves_series_to_a_new_study_for_the_other_order(hub: OutboundHub) -> None:
    two_series_study(hub)
    before = len(status_messages(hub))

    new = split(hub, "A2", MR_SERIES, new_uid="1.2.3.699")

    assert new.study.study_instance_uid == "1.2.3.699"
    assert (new.study.state, [link.accession.value for link in new.study.links]) == (StudyState.MATCHED, ["A2"])
    assert (new.summary.series_count, new.summary.instance_count) == (1, 1)
    assert new.study.header.modalities == ("MR",)
    assert new.history[-1].evidence["split_from"] == STUDY
    original = hub.run(lambda uow: hub.studies.get_study(uow, STUDY))
    assert (original.summary.series_count, original.summary.instance_count) == (1, 1)
    assert original.study.header.modalities == ("CT",)
    assert [link.accession.value for link in original.study.links] == ["A1"]
    record = original.history[-1]
    assert (record.rule, record.actor, record.evidence["split_to"], record.evidence["series"]) == (
        "split", "alice", "1.2.3.699", [MR_SERIES])
    assert hub.statuses("A2") == ["COMPLETED"]
    [message] = status_messages(hub)[before:]
    assert str(message.segment("OBR")[18]) == "A2" and obx_uids(message) == ["1.2.3.699"]
    assert timeline(hub, "A2")[-1][1]["change"] == "split"


def test_a_later_instance_of_a_split_series_follows_the_split(hub: OutboundHub) -> None:
    two_series_study(hub)
    split(hub, "A2", MR_SERIES, new_uid="1.2.3.699")

    recorded = hub.store(instance(STUDY, series=MR_SERIES, modality="MR"))  # header still names STUDY

    assert recorded.outcome.name == "STORED"
    new = hub.run(lambda uow: hub.studies.get_study(uow, "1.2.3.699"))
    original = hub.run(lambda uow: hub.studies.get_study(uow, STUDY))
    assert (new.summary.instance_count, original.summary.instance_count) == (2, 1)


def test_split_generates_a_uid_when_none_is_given(hub: OutboundHub) -> None:
    two_series_study(hub)
    new = split(hub, "A2", MR_SERIES)
    assert new.study.study_instance_uid.startswith("2.25.")


@pytest.mark.parametrize(
    "series,new_uid,error",
    [
        ((), "", MissingValue),
        (("9.9.9",), "", InvalidValue),
        ((CT_SERIES, MR_SERIES), "", InvalidValue),  # nothing would be left
        ((MR_SERIES,), "not-a-uid", InvalidValue),
        ((MR_SERIES,), STUDY, IdentityConflict),  # that UID is taken
    ],
)
def test_split_refusals_change_nothing(hub: OutboundHub, series: tuple[str, ...], new_uid: str,
                                       error: type[Exception]) -> None:
    two_series_study(hub)
    with pytest.raises(error):
        split(hub, "A2", *series, new_uid=new_uid)
    original = hub.run(lambda uow: hub.studies.get_study(uow, STUDY))
    assert original.summary.series_count == 2
    assert hub.statuses("A2") == ["SCHEDULED"]


def test_split_to_another_patients_order_is_refused(hub: OutboundHub) -> None:
    two_series_study(hub)
    with pytest.raises(IdentityConflict):
        split(hub, "B1", MR_SERIES)


def test_report_is_stored_and_sent_once_per_linked_order(hub: OutboundHub) -> None:
    two_series_study(hub)
    link(hub, "A2")

    recorded = hub.report("A1")

    with hub.engines.read.connect() as conn:
        stored = conn.execute(
            select(orders.c.accession, reports.c.status).join(orders, orders.c.pk == reports.c.order_pk)
            .order_by(orders.c.accession)
        ).all()
    assert [(r.accession, r.status) for r in stored] == [("A1", "F"), ("A2", "F")]
    to_ris = [m for d, m in queued(hub.engines, "ORU^R01") if d == "ris"]
    assert sorted(str(m.segment("OBR")[18]) for m in to_ris) == ["A1", "A2"]
    assert recorded.report_id

    hub.report("A2")  # a second final through the other order: a correction on both
    with hub.engines.read.connect() as conn:
        current = conn.execute(
            select(reports.c.status).where(reports.c.superseded_at.is_(None)).order_by(reports.c.pk)
        ).scalars().all()
    assert current == ["C", "C"]


def test_preliminary_after_final_is_a_business_refusal(hub: OutboundHub) -> None:
    two_series_study(hub)
    link(hub, "A2")
    hub.report("A1")
    before = len(queued(hub.engines))
    with pytest.raises(ReportStatusRefused) as refused:
        hub.report("A2", ReportStatus.PRELIMINARY)
    assert "corrected" in refused.value.message and refused.value.field == "report.status"
    assert len(queued(hub.engines)) == before


def test_a_split_study_unlinked_again_waits_in_the_queue_rather_than_matching_the_original_order(
    hub: OutboundHub,
) -> None:
    hub.place("A1", study_uid=STUDY)
    hub.place("A2", modality="MR")
    hub.store(instance(STUDY, series=CT_SERIES, accession="A1"))  # both series name A1 in their header
    hub.store(instance(STUDY, series=MR_SERIES, modality="MR", accession="A1"))
    new = split(hub, "A2", MR_SERIES, new_uid="1.2.3.600.9").study.study_instance_uid
    command = Unlink(new, "bob", "MR was not A2 either", EntityId("A2"))
    view = hub.run(lambda uow: hub.studies.unlink(uow, command))
    assert view.study.state is StudyState.UNASSIGNED
    assert view.study.links == ()
    # the reconciliation sweep must not undo the operator: the header's A1 is the original study's order
    assert hub.run(lambda uow: hub.reconciler.sweep(uow, since=hub.now)) == []
    assert hub.run(lambda uow: uow.studies.get(new)).links == ()


def test_the_sweep_files_a_study_created_during_a_merge_under_the_survivor(hub: OutboundHub) -> None:
    temporary = PatientId("TMP1", Issuer("HOSP"))
    hub.place("A1")
    hub.store(instance("1.2.3.700", patient=temporary, name="Doe^Jane"))
    # the race on PostgreSQL: the merge committed its alias while this study's transaction was open, so neither
    # saw the other (the merge did not move the study, the C-STORE did not see the alias)
    hub.run(lambda uow: uow.identities.add_alias(temporary, JANE, "merge", None))
    hub.run(lambda uow: hub.reconciler.sweep(uow, since=hub.now))
    study = hub.run(lambda uow: uow.studies.get("1.2.3.700"))
    assert study.header.patient_id.value == "P1"
