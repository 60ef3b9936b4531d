"""[[hl7_destinations]] in the TOML file: defaults, validation, environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from radsync.adapters.outbox.dispatcher import destination_routes
from radsync.config import load_settings


def test_a_destination_needs_only_name_host_and_port(tmp_path: Path) -> None:
    path = tmp_path / "radsync.toml"
    path.write_text('[[hl7_destinations]]\nname = "ris"\nhost = "127.0.0.1"\nport = 2576\n')
    (ris,) = load_settings(path).hl7_destinations
    assert (ris.events, ris.connect_timeout, ris.ack_timeout, ris.max_attempts) == (("report", "status"), 5, 10, 10)
    assert (ris.backoff_initial, ris.backoff_max, ris.dead_on_reject, ris.dead_on_error) == (1, 300, True, False)


def test_routes_follow_the_subscribed_events(tmp_path: Path) -> None:
    path = tmp_path / "radsync.toml"
    path.write_text(
        '[[hl7_destinations]]\nname = "ris"\nhost = "h"\nport = 1\nevents = ["report", "status"]\n'
        '[[hl7_destinations]]\nname = "billing"\nhost = "h"\nport = 2\nevents = ["report"]\n'
    )
    routes = destination_routes(load_settings(path))
    assert routes.for_event("report") == ("ris", "billing")
    assert routes.for_event("status") == ("ris",)


def test_destinations_can_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RADSYNC_HL7_DESTINATIONS", '[{"name": "ris", "host": "ris.local", "port": 2576}]')
    (ris,) = load_settings().hl7_destinations
    assert (ris.name, ris.host, ris.port) == ("ris", "ris.local", 2576)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ('name = "ris"\nhost = "h"\nport = 1\n[[hl7_destinations]]\nname = "ris"\nhost = "g"\nport = 2',
         "configured twice"),
        ('name = "ris"\nhost = "h"\nport = 0', "port"),
        ('name = "ris"\nhost = "h"\nport = 1\nevents = ["adt"]', "events"),
        ('name = "ris"\nhost = "h"\nport = 1\nack_timeout = 0', "ack_timeout"),
        ('name = "ris"\nhost = "h"\nport = 1\nmax_attempts = 0', "max_attempts"),
        ('name = "ris"\nhost = "h"\nport = 1\nbackoff_initial = 10\nbackoff_max = 1', "backoff_max"),
        ('name = "r i s"\nhost = "h"\nport = 1', "name"),
        ('name = "ris"\nhost = "h"\nport = 1\nretries = 3', "retries"),
    ],
)
def test_invalid_destinations_are_refused(tmp_path: Path, text: str, complaint: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[[hl7_destinations]]\n" + text + "\n")
    with pytest.raises(ValidationError) as excinfo:
        load_settings(path)
    assert complaint in str(excinfo.value)
