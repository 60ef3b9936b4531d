"""A radsync process killed with SIGKILL in the middle of a send: after a restart nothing is lost, and what was not
confirmed is sent again with the same control ID (FIELD-NOTES item 8, issue 4 item 5)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

from sqlalchemy import update

from radsync.adapters.outbox.store import OutboxState, QueueStore
from radsync.adapters.persistence.engine import Engines
from radsync.adapters.persistence.tables import outbox
from radsync.clock import utc_now
from tests.adapters.outbox.receiver import ACCEPT, SILENCE, Receiver, wait_until
from tests.adapters.outbox.support import MakeDispatcher, enqueue, row, settings_for, states

ROOT = Path(__file__).resolve().parents[3]


def test_a_process_killed_mid_send_resends_with_the_same_control_id_after_restart(
    engines: Engines, database_url: str, receiver: Receiver, make_dispatcher: MakeDispatcher
) -> None:
    receiver.script = lambda cid, _n: SILENCE if cid == "K3" else ACCEPT  # K3's ACK never comes
    settings = settings_for(receiver)
    cids = ["K1", "K2", "K3", "K4", "K5"]
    enqueue(engines, settings, cids)
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.adapters.outbox.child_dispatcher", database_url, str(receiver.port), "node-a"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        receiver.wait_for(lambda r: "K3" in r.received)
    finally:
        child.kill()  # SIGKILL: no cleanup of any kind
        child.wait(10)
        assert child.stdout is not None
        child.stdout.close()
    interrupted = row(engines, "K3")
    assert (interrupted.state, interrupted.claimed_by) == ("sending", "node-a")

    receiver.script = lambda _cid, _n: ACCEPT
    make_dispatcher(settings, node="node-a")  # the same node restarting
    wait_until(lambda: all(s == "sent" for s in states(engines).values()), what="every message sent")
    assert receiver.times_seen("K3") == 2  # the interrupted message, resent with its control ID
    assert list(dict.fromkeys(receiver.received)) == cids  # nothing lost, nothing overtaken
    assert receiver.received[-2:] == ["K4", "K5"]


def test_another_node_takes_over_rows_whose_claim_expired(
    engines: Engines, receiver: Receiver, make_dispatcher: MakeDispatcher
) -> None:
    settings = settings_for(receiver)
    enqueue(engines, settings, ["L1", "L2"])
    with engines.write.begin() as conn:  # a node that died holding L1 and L2, its lease now over
        conn.execute(
            update(outbox).values(
                state=OutboxState.SENDING, claimed_by="dead-node", lease_until=utc_now() - dt.timedelta(seconds=1)
            )
        )
    make_dispatcher(settings, node="node-b")
    wait_until(lambda: states(engines) == {"L1": "sent", "L2": "sent"}, what="both taken over and sent")
    assert receiver.received == ["L1", "L2"]


def test_a_live_claim_of_another_node_is_left_alone(engines: Engines, receiver: Receiver) -> None:
    settings = settings_for(receiver)
    enqueue(engines, settings, ["N1", "N2"])
    store = QueueStore(engines.write, utc_now, lease=dt.timedelta(seconds=60))
    first = store.claim("ris", "node-a", 1)
    assert [m.control_id for m in first.messages] == ["N1"]
    assert store.recover("node-b") == 0  # node-b restarting does not touch node-a's claim
    blocked = store.claim("ris", "node-b", 10)
    assert blocked.messages == ()  # N2 may not overtake N1
    assert blocked.head_due_at is not None
    assert store.recover("node-a") == 1
