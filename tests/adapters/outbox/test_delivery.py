"""Delivery to a real MLLP receiver (python-hl7's asyncio server) standing in for the RIS, on SQLite and PostgreSQL.

The receiver may see a message more than once (at-least-once delivery), always with the same control ID; what
must never happen is a message lost, confirmed by someone else's ACK, or overtaken by the one behind it.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from radsync.adapters.outbox.dispatcher import destination_routes
from radsync.adapters.outbox.metrics import OutboxMetrics
from radsync.adapters.outbox.store import SqlOutbox
from radsync.adapters.persistence.engine import Engines
from radsync.adapters.persistence.tables import outbox
from radsync.clock import utc_now
from tests.adapters.outbox.receiver import ACCEPT, SILENCE, Answer, Receiver, oru, wait_until
from tests.adapters.outbox.support import MakeDispatcher, enqueue, row, settings_for, states


def first_arrivals(received: list[str]) -> list[str]:
    return list(dict.fromkeys(received))


def all_sent(engines: Engines, control_ids: list[str]) -> bool:
    current = states(engines)
    return all(current.get(c) == "sent" for c in control_ids)


def test_messages_are_delivered_in_order_and_marked_sent(
    engines: Engines, receiver: Receiver, make_dispatcher: MakeDispatcher
) -> None:
    settings = settings_for(receiver)
    dispatcher = make_dispatcher(settings)
    cids = [f"C{i:03d}" for i in range(40)]
    enqueue(engines, settings, cids[:20])
    dispatcher.notify("ris")
    enqueue(engines, settings, cids[20:])
    dispatcher.notify()
    wait_until(lambda: all_sent(engines, cids), what="every message sent")
    assert receiver.received == cids  # in order, each exactly once
    sent = row(engines, "C000")
    assert (sent.attempts, sent.ack_code, sent.claimed_by, sent.last_error) == (0, "AA", None, "")
    assert sent.sent_at is not None and sent.ack_latency > 0


def test_a_receiver_restart_loses_nothing_and_keeps_the_order(
    engines: Engines, receiver: Receiver, make_dispatcher: MakeDispatcher
) -> None:
    settings = settings_for(receiver, max_attempts=50)
    dispatcher = make_dispatcher(settings)
    cids = [f"R{i:03d}" for i in range(30)]
    enqueue(engines, settings, cids[:10])
    wait_until(lambda: all_sent(engines, cids[:10]), what="the first ten sent")
    receiver.stop()
    enqueue(engines, settings, cids[10:])  # queued while the RIS is down
    dispatcher.notify()
    wait_until(lambda: states(engines).get("R010") == "failed", what="a failed attempt while the RIS is down")
    head = row(engines, "R010")
    assert head.attempts == 0  # connection refused: the destination is down, the message is not at fault
    assert "connect" in head.last_error
    receiver.start()
    wait_until(lambda: all_sent(engines, cids), what="every message sent after the restart")
    assert first_arrivals(receiver.received) == cids
    assert set(receiver.received) == set(cids)


def test_a_stale_ack_never_confirms_the_message_in_flight(
    engines: Engines, receiver: Receiver, make_dispatcher: MakeDispatcher
) -> None:
    def script(control_id: str, times: int) -> tuple[Answer, ...]:
        if control_id == "S2" and times == 1:
            return (Answer(msa2="S1"),)  # only the previous message's ACK: S2 must not count as delivered
        if control_id == "S2":
            return (Answer(msa2="S1"), Answer(msa2="FOREIGN"), Answer())  # stale, foreign, then the right one
        return ACCEPT

    receiver.script = script
    settings = settings_for(receiver)
    make_dispatcher(settings)
    enqueue(engines, settings, ["S1", "S2", "S3"])
    wait_until(lambda: all_sent(engines, ["S1", "S2", "S3"]), what="every message sent")
    s2 = row(engines, "S2")
    assert s2.attempts == 1  # the first attempt timed out despite the stale ACK
    assert receiver.received == ["S1", "S2", "S2", "S3"]


def test_a_rejected_message_becomes_a_dead_letter_and_the_queue_moves_on(
    engines: Engines, receiver: Receiver, make_dispatcher: MakeDispatcher, metrics: OutboxMetrics
) -> None:
    receiver.script = lambda cid, _n: (Answer(code="AR"),) if cid == "P2" else ACCEPT
    settings = settings_for(receiver)
    make_dispatcher(settings)
    enqueue(engines, settings, ["P1", "P2", "P3"])
    wait_until(lambda: states(engines) == {"P1": "sent", "P2": "dead", "P3": "sent"}, what="P2 dead, others sent")
    dead = row(engines, "P2")
    assert (dead.attempts, dead.ack_code) == (1, "AR")
    assert dead.last_error.startswith("AR")
    assert receiver.received == ["P1", "P2", "P3"]
    # The counters move right after the commit that marks the rows, on the worker's thread: wait for them too.
    wait_until(lambda: metrics.registry.get_sample_value("radsync_outbox_sent_total", {"destination": "ris"}) == 2,
               what="sent counter at 2")
    assert metrics.registry.get_sample_value("radsync_outbox_dead_total", {"destination": "ris"}) == 1


def test_application_errors_are_retried_up_to_max_attempts_then_parked(
    engines: Engines, receiver: Receiver, make_dispatcher: MakeDispatcher, metrics: OutboxMetrics
) -> None:
    receiver.script = lambda cid, _n: (Answer(code="AE"),) if cid == "E2" else ACCEPT
    settings = settings_for(receiver, max_attempts=3)
    make_dispatcher(settings)
    enqueue(engines, settings, ["E1", "E2", "E3"])
    wait_until(lambda: states(engines) == {"E1": "sent", "E2": "dead", "E3": "sent"}, what="E2 dead, others sent")
    assert receiver.received == ["E1", "E2", "E2", "E2", "E3"]  # E3 waited until E2 was given up
    assert row(engines, "E2").attempts == 3
    assert metrics.registry.get_sample_value("radsync_outbox_failed_total", {"destination": "ris"}) == 3


def test_an_ack_timeout_is_retried_on_a_new_connection(
    engines: Engines, receiver: Receiver, make_dispatcher: MakeDispatcher
) -> None:
    receiver.script = lambda cid, n: (Answer(delay=1.0),) if (cid, n) == ("T1", 1) else ACCEPT
    settings = settings_for(receiver, ack_timeout=0.3)
    make_dispatcher(settings)
    enqueue(engines, settings, ["T1", "T2"])
    wait_until(lambda: all_sent(engines, ["T1", "T2"]), what="both sent")
    assert receiver.received == ["T1", "T1", "T2"]
    assert row(engines, "T1").attempts == 1


def test_a_dead_letter_can_be_resent_with_its_control_id(
    engines: Engines, receiver: Receiver, make_dispatcher: MakeDispatcher
) -> None:
    receiver.script = lambda cid, n: (Answer(code="AR"),) if (cid, n) == ("D1", 1) else ACCEPT
    settings = settings_for(receiver)
    dispatcher = make_dispatcher(settings)
    (dead_id, sent_id) = enqueue(engines, settings, ["D1", "D2"])
    wait_until(lambda: states(engines) == {"D1": "dead", "D2": "sent"}, what="D1 dead")
    entry = dispatcher.operations.resend(dead_id)
    assert (entry.state, entry.attempts, entry.control_id) == ("pending", 0, "D1")
    wait_until(lambda: states(engines)["D1"] == "sent", what="D1 sent after the resend")
    dispatcher.operations.resend(sent_id)  # a sent message can be sent again, too
    wait_until(lambda: receiver.received.count("D2") == 2, what="D2 sent again")
    wait_until(lambda: states(engines)["D2"] == "sent", what="D2 sent")
    assert receiver.received == ["D1", "D2", "D1", "D2"]


def test_a_rolled_back_enqueue_sends_nothing(
    engines: Engines, receiver: Receiver, make_dispatcher: MakeDispatcher
) -> None:
    settings = settings_for(receiver)
    dispatcher = make_dispatcher(settings)
    routes = destination_routes(settings)
    with pytest.raises(RuntimeError), engines.write.begin() as conn:
        SqlOutbox(conn, utc_now(), routes).enqueue("ris", "ORU^R01", oru("GONE"), "GONE")
        raise RuntimeError("the use case failed after enqueueing")
    dispatcher.notify()
    enqueue(engines, settings, ["KEPT"])
    dispatcher.notify()
    wait_until(lambda: states(engines).get("KEPT") == "sent", what="the committed message sent")
    assert receiver.received == ["KEPT"]
    with engines.read.connect() as conn:
        assert conn.execute(select(func.count()).select_from(outbox)).scalar() == 1


def test_each_destination_has_its_own_queue(engines: Engines, make_dispatcher: MakeDispatcher) -> None:
    stuck = Receiver(script=lambda _cid, _n: SILENCE).start()
    fine = Receiver().start()
    try:
        settings = settings_for(stuck, fine, names=("slow", "fast"), ack_timeout=5.0)
        make_dispatcher(settings)
        enqueue(engines, settings, ["A1", "A2"], destination="slow")
        stuck.wait_for(lambda r: r.received == ["A1"])  # the slow queue is now waiting for an ACK
        enqueue(engines, settings, ["B1", "B2"], destination="fast")
        wait_until(lambda: all_sent(engines, ["B1", "B2"]), what="the healthy destination's messages sent")
        assert stuck.received == ["A1"]  # still waiting for its ACK; A2 waits behind it
        assert states(engines)["A2"] in ("pending", "sending")
    finally:
        stuck.close()
        fine.close()


def test_stop_abandons_the_send_in_flight_and_leaves_it_pending(
    engines: Engines, receiver: Receiver, make_dispatcher: MakeDispatcher
) -> None:
    receiver.script = lambda _cid, _n: SILENCE
    settings = settings_for(receiver, ack_timeout=30.0)
    dispatcher = make_dispatcher(settings, stop_grace=0.2)
    enqueue(engines, settings, ["H1", "H2"])
    receiver.wait_for(lambda r: r.received == ["H1"])
    dispatcher.stop()
    assert states(engines) == {"H1": "pending", "H2": "pending"}
    held = row(engines, "H1")
    assert (held.attempts, held.claimed_by) == (0, None)


def test_stop_lets_a_prompt_ack_finish(engines: Engines, receiver: Receiver, make_dispatcher: MakeDispatcher) -> None:
    receiver.script = lambda _cid, _n: (Answer(delay=0.3),)
    settings = settings_for(receiver, ack_timeout=5.0)
    dispatcher = make_dispatcher(settings, stop_grace=3.0)
    enqueue(engines, settings, ["F1", "F2"])
    receiver.wait_for(lambda r: r.received == ["F1"])
    dispatcher.stop()
    assert states(engines) == {"F1": "sent", "F2": "pending"}


def test_queue_metrics_are_read_from_the_database(
    engines: Engines, receiver: Receiver, make_dispatcher: MakeDispatcher, metrics: OutboxMetrics
) -> None:
    receiver.stop()
    settings = settings_for(receiver, backoff_initial=5.0, backoff_max=5.0)
    dispatcher = make_dispatcher(settings)
    enqueue(engines, settings, ["M1", "M2", "M3"])
    wait_until(lambda: states(engines)["M1"] == "failed", what="a failed attempt")
    labels = {"destination": "ris"}
    assert metrics.registry.get_sample_value("radsync_outbox_depth", labels) == 3
    assert metrics.registry.get_sample_value("radsync_outbox_oldest_pending_seconds", labels) >= 0
    receiver.start()
    (m1,) = dispatcher.operations.entries("failed")
    dispatcher.operations.resend(m1.id)  # "retry now" instead of waiting out the backoff
    wait_until(lambda: all_sent(engines, ["M1", "M2", "M3"]), what="every message sent")
    assert metrics.registry.get_sample_value("radsync_outbox_depth", labels) == 0
    assert metrics.registry.get_sample_value("radsync_outbox_ack_latency_seconds_count", labels) == 3
