"""Grouped procedures over HTTP JSON (issue 5 §4): link a further order, unlink one, split; the real app."""

from __future__ import annotations

from typing import Any

import pytest

from radsync.bootstrap import Container
from tests.adapters.http.test_studies_api import api
from tests.app.imaging import JOHN, Hub, instance

pytestmark = pytest.mark.anyio

STUDY = "1.2.3.600"
CT_SERIES, MR_SERIES = f"{STUDY}.1", f"{STUDY}.2"


@pytest.fixture
def grouped(container: Container) -> Hub:
    hub = Hub(container.engines)
    hub.place("A1", study_uid=STUDY)
    hub.place("A2", modality="MR")
    hub.place("B1", JOHN)
    hub.store(instance(STUDY, series=CT_SERIES))
    hub.store(instance(STUDY, series=MR_SERIES, modality="MR"))
    return hub


def accessions(study: dict[str, Any]) -> list[str]:
    return sorted(link["accession_number"] for link in study["links"])


async def test_link_a_further_order_then_unlink_it(container: Container, grouped: Hub) -> None:
    async with api(container) as client:
        linked = await client.post(f"/api/studies/{STUDY}/orders", json={"accession_number": "A2",
                                   "reason": "chest and ribs in one scan"}, headers={"X-Radsync-User": "alice"})
        assert linked.status_code == 200, linked.text
        assert accessions(linked.json()) == ["A1", "A2"]
        last = linked.json()["history"][-1]
        assert (last["actor"], last["evidence"]["why"]) == ("alice", "chest and ribs in one scan")
        assert last["evidence"]["links"] == {"old": ["A1"], "new": ["A1", "A2"]}
        assert grouped.statuses("A2") == ["COMPLETED"]

        unlinked = await client.delete(f"/api/studies/{STUDY}/orders/A2", params={"reason": "not performed"})
        assert unlinked.status_code == 200, unlinked.text
        assert (unlinked.json()["state"], accessions(unlinked.json())) == ("matched", ["A1"])
        again = await client.delete(f"/api/studies/{STUDY}/orders/A2")
        assert again.status_code == 404 and again.json()["error"] == "unknown_order"


async def test_linking_another_patients_order_is_409_and_changes_nothing(container: Container,
                                                                       grouped: Hub) -> None:
    async with api(container) as client:
        refused = await client.post(f"/api/studies/{STUDY}/orders", json={"accession_number": "B1"})
        assert refused.status_code == 409
        assert refused.json()["error"] == "identity_conflict" and refused.json()["field"] == "patient.id"
        unknown = await client.post(f"/api/studies/{STUDY}/orders", json={"accession_number": "NOPE"})
        assert unknown.status_code == 404
        no_study = await client.post("/api/studies/9.9.9/orders", json={"accession_number": "A2"})
        assert no_study.status_code == 404 and no_study.json()["error"] == "unknown_study"
        study = (await client.get(f"/api/studies/{STUDY}")).json()
    assert accessions(study) == ["A1"]
    assert grouped.statuses("B1") == ["SCHEDULED"]


async def test_split_moves_the_series_to_a_new_study_for_the_other_order(container: Container,
                                                                         grouped: Hub) -> None:
    async with api(container) as client:
        response = await client.post(f"/api/studies/{STUDY}/split", json={
            "series_instance_uids": [MR_SERIES], "accession_number": "A2", "reason": "MR is the other exam"})
        assert response.status_code == 201, response.text
        new = response.json()
        assert new["study_instance_uid"].startswith("2.25.")
        assert (new["state"], accessions(new), new["counts"]["series"]) == ("matched", ["A2"], 1)
        assert new["history"][-1]["evidence"]["split_from"] == STUDY
        original = (await client.get(f"/api/studies/{STUDY}")).json()
        assert (original["counts"]["series"], accessions(original)) == (1, ["A1"])
        assert original["history"][-1]["rule"] == "split"
    assert grouped.statuses("A2") == ["COMPLETED"]


@pytest.mark.parametrize(
    "body,status,error",
    [
        ({"series_instance_uids": ["9.9"], "accession_number": "A2"}, 422, "invalid_value"),
        ({"series_instance_uids": [CT_SERIES, MR_SERIES], "accession_number": "A2"}, 422, "invalid_value"),
        ({"series_instance_uids": [], "accession_number": "A2"}, 422, "invalid_request"),
        ({"accession_number": "A2"}, 422, "invalid_request"),
        ({"series_instance_uids": [MR_SERIES], "accession_number": "A2", "study_instance_uid": STUDY}, 409,
         "identity_conflict"),
        ({"series_instance_uids": [MR_SERIES], "accession_number": "B1"}, 409, "identity_conflict"),
        ({"series_instance_uids": [MR_SERIES], "accession_number": "NOPE"}, 404, "unknown_order"),
    ],
)
async def test_split_refusals_are_json_errors(container: Container, grouped: Hub, body: dict[str, Any],
                                              status: int, error: str) -> None:
    async with api(container) as client:
        response = await client.post(f"/api/studies/{STUDY}/split", json=body)
        assert (response.status_code, response.json()["error"]) == (status, error)
        original = (await client.get(f"/api/studies/{STUDY}")).json()
    assert original["counts"]["series"] == 2


async def test_preliminary_report_after_a_final_one_is_409(container: Container, grouped: Hub) -> None:
    report = {"accession_number": "A1", "text": "Normal.", "author": "Lee^Hannah",
              "observed_at": "2024-06-12T16:29:00+02:00"}
    async with api(container) as client:
        assert (await client.post("/api/reports", json=report | {"status": "final"})).status_code == 201
        refused = await client.post("/api/reports", json=report | {"status": "preliminary"})
    assert refused.status_code == 409
    assert refused.json()["field"] == "report.status" and "corrected" in refused.json()["detail"]
