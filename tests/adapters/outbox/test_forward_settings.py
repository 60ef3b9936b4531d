"""[[dicom_destinations]] forward = true: defaults, routes, strict validation (docs/forwarding.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from radsync.adapters.outbox.dispatcher import destination_routes, forwarding_destinations, lease_for
from radsync.config import load_settings

PACS = '[[dicom_destinations]]\nae_title = "PACS"\nhost = "127.0.0.1"\nport = 104\n'


def test_forwarding_is_off_unless_asked_for(tmp_path: Path) -> None:
    path = tmp_path / "radsync.toml"
    path.write_text(PACS)
    settings = load_settings(path)
    (pacs,) = settings.dicom_destinations
    assert pacs.forward is False
    assert forwarding_destinations(settings) == ()
    assert destination_routes(settings).for_event("forward") == ()


def test_a_forwarding_destination_is_an_outbox_queue_named_by_its_ae_title(tmp_path: Path) -> None:
    path = tmp_path / "radsync.toml"
    path.write_text(
        PACS + "forward = true\nmax_attempts = 3\n"
        '[[dicom_destinations]]\nae_title = "VIEWER"\nhost = "h"\nport = 105\n'
        '[[hl7_destinations]]\nname = "ris"\nhost = "h"\nport = 2576\n'
    )
    settings = load_settings(path)
    (pacs,) = forwarding_destinations(settings)
    assert (pacs.name, pacs.max_attempts, pacs.backoff_initial, pacs.backoff_max) == ("PACS", 3, 1, 300)
    assert (pacs.connect_timeout, pacs.response_timeout) == (5, 30)
    routes = destination_routes(settings)
    assert routes.for_event("forward") == ("PACS",)
    assert routes.for_event("report") == ("ris",)
    assert lease_for(pacs).total_seconds() == 2 * (5 + 30) + 30


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        (PACS + "forward = true\nbackoff_initial = 10\nbackoff_max = 5\n", "backoff_max"),
        (PACS + "forward = true\nmax_attempts = 0\n", "max_attempts"),
        (PACS + "forward = true\nresponse_timeout = 0\n", "response_timeout"),
        (PACS + "forward = true\nretries = 3\n", "retries"),
        (PACS + 'forward = "sometimes"\n', "forward"),
        (PACS + 'forward = true\n[[hl7_destinations]]\nname = "PACS"\nhost = "h"\nport = 1\n', "PACS"),
        ('[[hl7_destinations]]\nname = "ris"\nhost = "h"\nport = 1\nevents = ["forward"]\n', "forward"),
    ],
)
def test_bad_forwarding_settings_stop_radsync_at_start(tmp_path: Path, text: str, complaint: str) -> None:
    path = tmp_path / "radsync.toml"
    path.write_text(text)
    with pytest.raises(ValidationError) as raised:
        load_settings(path)
    assert complaint in str(raised.value)
