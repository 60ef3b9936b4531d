"""The Unassigned queue over HTTP JSON: httpx.AsyncClient over ASGITransport against create_app(container)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from radsync.adapters.http.app import create_app
from radsync.bootstrap import Container
from tests.adapters.http.scenario import BEST, CONFLICT_UID, UNASSIGNED_UID
from tests.app.imaging import Hub

pytestmark = pytest.mark.anyio

COMPONENTS = {"study_uid", "accession", "patient_id", "name", "birth_date", "modality", "date"}


@asynccontextmanager
async def api(container: Container) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(container))
    async with httpx.AsyncClient(transport=transport, base_url="http://radsync") as client:
        yield client


async def reconcile(
    client: httpx.AsyncClient, uid: str, body: dict[str, Any], **headers: str
) -> httpx.Response:
    return await client.post(f"/api/studies/{uid}/reconcile", json=body, headers=headers)


async def test_unassigned_queue_lists_the_study_as_received_with_ranked_explained_candidates(
    container: Container, hub: Hub
) -> None:
    async with api(container) as client:
        response = await client.get("/api/studies", params={"state": "unassigned"})
    assert response.status_code == 200
    body = response.json()
    assert (body["state"], body["count"]) == ("unassigned", 1)
    (study,) = body["studies"]
    assert (study["study_instance_uid"], study["state"], study["reason"]) == (
        UNASSIGNED_UID,
        "unassigned",
        "unknown_accession",
    )
    assert study["as_received"]["patient"] | {"sex": None} == {
        "patient_id": "P1",
        "issuer_of_patient_id": "HOSP",
        "name": "Doe^Jnae",
        "birth_date": "1980-03-04",
        "sex": None,
    }
    assert study["as_received"]["study"]["accession_number"] == "ACC1243"
    assert study["counts"] == {"series": 1, "instances": 1, "quarantined_instances": 0}
    assert study["first_received_at"] == "2024-06-12T09:00:00Z" == study["last_received_at"]
    assert study["links"] == []
    candidates = study["candidates"]
    assert [c["rank"] for c in candidates] == list(range(1, len(candidates) + 1))
    assert candidates[0]["accession_number"] == BEST
    assert candidates[0]["patient"]["name"] == "Doe^Jane"  # the order's patient as radsync holds it
    scores = [c["score"] for c in candidates]
    assert scores == sorted(scores, reverse=True) and scores[0] > scores[-1]
    components = {c["name"]: c for c in candidates[0]["components"]}
    assert set(components) == COMPONENTS
    assert components["accession"]["detail"] == "1 edit(s) apart"
    assert 0 < components["name"]["score"] < 1
    assert components["birth_date"]["score"] == 1.0
    assert round(sum(c["weighted"] for c in components.values()), 3) == round(candidates[0]["score"], 3)


async def test_reconcile_links_the_study_moves_the_order_on_and_records_who_and_why(
    container: Container, hub: Hub
) -> None:
    async with api(container) as client:
        response = await reconcile(
            client,
            UNASSIGNED_UID,
            {"accession_number": BEST, "reason": "tech typed the accession wrong"},
            **{"X-Radsync-User": "alice"},
        )
        assert response.status_code == 200, response.text
        study = response.json()
        queue = (await client.get("/api/studies")).json()
        matched = (await client.get("/api/studies", params={"state": "matched"})).json()
    assert (study["state"], study["reason"]) == ("matched", None)
    assert [(link["accession_number"], link["source"], link["rule"]) for link in study["links"]] == [
        (BEST, "manual", "manual")
    ]
    assert study["candidates"] == []
    last = study["history"][-1]
    assert (last["actor"], last["rule"], last["outcome"], last["why"]) == (
        "alice",
        "manual",
        "matched",
        "tech typed the accession wrong",
    )
    assert last["at"].endswith("Z")
    assert hub.statuses(BEST) == ["COMPLETED"]  # images received count as performed
    assert queue["studies"] == []
    assert [s["study_instance_uid"] for s in matched["studies"]] == [UNASSIGNED_UID]


async def test_unlink_returns_the_study_to_the_queue_and_history_shows_both_decisions(
    container: Container, hub: Hub
) -> None:
    async with api(container) as client:
        await reconcile(
            client, UNASSIGNED_UID, {"accession_number": BEST, "reason": "looks right", "actor": "carol"}
        )
        response = await client.post(f"/api/studies/{UNASSIGNED_UID}/unlink", json={"reason": "wrong order"})
        assert response.status_code == 200, response.text
        fetched = (await client.get(f"/api/studies/{UNASSIGNED_UID}")).json()
        queue = (await client.get("/api/studies")).json()
    assert response.json()["state"] == "unassigned"
    assert (fetched["state"], fetched["reason"], fetched["links"]) == ("unassigned", "unlinked", [])
    decisions = [(h["actor"], h["outcome"], h["why"]) for h in fetched["history"]]
    assert decisions[0][0] == "radsync"  # the automatic decision when the study arrived
    assert decisions[-2:] == [("carol", "matched", "looks right"), ("api", "unassigned", "wrong order")]
    assert [s["study_instance_uid"] for s in queue["studies"]] == [UNASSIGNED_UID]


async def test_an_unlinked_study_can_be_linked_again(container: Container, hub: Hub) -> None:
    async with api(container) as client:
        await reconcile(client, UNASSIGNED_UID, {"accession_number": BEST, "reason": "first try"})
        await client.post(f"/api/studies/{UNASSIGNED_UID}/unlink", json={"reason": "undo"})
        again = await reconcile(client, UNASSIGNED_UID, {"accession_number": BEST, "reason": "it was right"})
    assert again.status_code == 200
    assert [link["accession_number"] for link in again.json()["links"]] == [BEST]
    assert [h["why"] for h in again.json()["history"][-3:]] == ["first try", "undo", "it was right"]


async def test_conflict_queue_lists_the_quarantined_study_with_its_reason(
    container: Container, hub: Hub
) -> None:
    async with api(container) as client:
        body = (await client.get("/api/studies", params={"state": "conflict"})).json()
    (study,) = body["studies"]
    assert (study["study_instance_uid"], study["state"], study["reason"]) == (
        CONFLICT_UID,
        "conflict",
        "patient_id_mismatch",
    )
    assert study["as_received"]["patient"]["patient_id"] == "P1"  # Jane's header on John's study UID
    assert "B1" in [c["accession_number"] for c in study["candidates"]]


async def test_reconciling_a_conflict_applies_the_orders_patient_and_the_body_actor_wins(
    container: Container, hub: Hub
) -> None:
    async with api(container) as client:
        response = await reconcile(
            client,
            CONFLICT_UID,
            {"accession_number": "B1", "reason": "John was scanned; header typed wrong", "actor": "dave"},
            **{"X-Radsync-User": "alice"},
        )
        conflicts = (await client.get("/api/studies", params={"state": "conflict"})).json()
    assert response.status_code == 200, response.text
    study = response.json()
    assert study["state"] == "matched"
    assert [link["accession_number"] for link in study["links"]] == ["B1"]
    last = study["history"][-1]
    assert (last["actor"], last["evidence"]["previous_state"]) == ("dave", "conflict")
    assert last["evidence"]["rules"][0]["identity"]  # the mismatch is recorded, not enforced
    assert hub.statuses("B1") == ["COMPLETED"]
    assert conflicts["studies"] == []


async def test_one_study_comes_with_its_history(container: Container, hub: Hub) -> None:
    async with api(container) as client:
        response = await client.get(f"/api/studies/{CONFLICT_UID}")
    assert response.status_code == 200
    (decision,) = response.json()["history"]
    assert (decision["actor"], decision["outcome"], decision["reason"]) == (
        "radsync",
        "conflict",
        "patient_id_mismatch",
    )
    assert decision["at"] == "2024-06-12T09:00:00Z"
    assert decision["evidence"]


async def test_paging_walks_the_queue_oldest_first(container: Container, hub: Hub) -> None:
    from tests.app.imaging import instance

    hub.store(instance("1.2.3.600", accession="NOPE"))
    async with api(container) as client:
        first = (await client.get("/api/studies", params={"limit": 1})).json()
        second = (await client.get("/api/studies", params={"limit": 1, "offset": 1})).json()
    assert [s["study_instance_uid"] for s in first["studies"] + second["studies"]] == [
        UNASSIGNED_UID,
        "1.2.3.600",
    ]


async def test_unknown_study_is_404_with_the_json_error(container: Container, hub: Hub) -> None:
    async with api(container) as client:
        got = await client.get("/api/studies/9.9.9")
        posted = await reconcile(client, "9.9.9", {"accession_number": BEST, "reason": "x"})
        unlinked = await client.post("/api/studies/9.9.9/unlink", json={"reason": "x"})
    for response in (got, posted, unlinked):
        assert response.status_code == 404
        assert response.json() == {
            "error": "unknown_study",
            "detail": "no such study",
            "field": "study.study_instance_uid",
        }


async def test_unknown_accession_is_refused_and_changes_nothing(container: Container, hub: Hub) -> None:
    async with api(container) as client:
        response = await reconcile(client, UNASSIGNED_UID, {"accession_number": "NOPE", "reason": "x"})
        not_linked = await client.post(
            f"/api/studies/{UNASSIGNED_UID}/unlink", json={"reason": "x", "accession_number": BEST}
        )
        study = (await client.get(f"/api/studies/{UNASSIGNED_UID}")).json()
    assert response.status_code == 404
    assert response.json()["error"] == "unknown_order" and response.json()["field"] == "order.accession"
    assert (
        not_linked.status_code == 404
        and not_linked.json()["detail"] == "the study is not linked to that order"
    )
    assert (study["state"], len(study["history"])) == ("unassigned", 1)
    assert hub.statuses(BEST) == ["SCHEDULED"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"accession_number": BEST}, "body.reason"),
        ({"accession_number": BEST, "reason": "   "}, "body.reason"),
        ({"reason": "why"}, "body.accession_number"),
        ({"accession_number": BEST, "reason": "why", "accession": "typo"}, "body.accession"),
        ({"accession_number": 12, "reason": "why"}, "body.accession_number"),
    ],
)
async def test_malformed_body_is_422_with_the_offending_field(
    container: Container, hub: Hub, body: dict[str, Any], field: str
) -> None:
    async with api(container) as client:
        response = await reconcile(client, UNASSIGNED_UID, body)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"
    assert response.json()["field"] == field
    assert hub.statuses(BEST) == ["SCHEDULED"]


async def test_body_that_is_not_json_and_bad_queries_are_422_never_500(
    container: Container, hub: Hub
) -> None:
    async with api(container) as client:
        garbage = await client.post(
            f"/api/studies/{UNASSIGNED_UID}/reconcile",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
        no_body = await client.post(f"/api/studies/{UNASSIGNED_UID}/unlink")
        bad_state = await client.get("/api/studies", params={"state": "lost"})
        bad_limit = await client.get("/api/studies", params={"limit": 0})
    for response in (garbage, no_body, bad_state, bad_limit):
        assert response.status_code == 422, response.text
        assert set(response.json()) == {"error", "detail", "field"}
    assert bad_state.json()["field"] == "query.state"
