"""A radsync stand-in process for the crash test: runs an outbox dispatcher until it is killed.

Usage: python -m tests.adapters.outbox.child_dispatcher DATABASE_URL PORT NODE
"""

from __future__ import annotations

import sys
import threading

from radsync.adapters.outbox.dispatcher import OutboxDispatcher
from radsync.adapters.persistence.engine import create_engines
from radsync.clock import utc_now
from radsync.config import HL7DestinationSettings, Settings


def main(url: str, port: int, node: str) -> None:
    settings = Settings(
        hl7_destinations=(HL7DestinationSettings(name="ris", host="127.0.0.1", port=port, ack_timeout=60.0),)
    )
    dispatcher = OutboxDispatcher(settings, create_engines(url), utc_now, node=node, poll_interval=0.05)
    dispatcher.start()
    print("started", flush=True)
    threading.Event().wait()  # until SIGKILL


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
