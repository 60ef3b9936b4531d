"""Settings precedence and validation: defaults < TOML < RADSYNC_* < flags; bad values are named."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from radsync.config import load_settings


@pytest.fixture
def toml(tmp_path: Path) -> Path:
    path = tmp_path / "radsync.toml"
    path.write_text('hl7_port = 3000\ndicom_port = 3001\n[[stations]]\nae_title = " CT01 "\nmodality = "ct"\n')
    return path


def test_defaults_match_the_documentation(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("RADSYNC_HL7_PORT", "RADSYNC_DICOM_PORT", "RADSYNC_HTTP_PORT", "RADSYNC_AE_TITLE", "RADSYNC_HOST"):
        monkeypatch.delenv(key, raising=False)
    settings = load_settings()
    assert (settings.host, settings.hl7_port, settings.dicom_port, settings.http_port, settings.ae_title) == (
        "127.0.0.1", 2575, 11112, 8080, "RADSYNC")
    assert settings.effective_database_url.startswith("sqlite:///")
    assert settings.effective_database_url.endswith("radsync-data/radsync.db")


def test_toml_then_environment_then_flags(toml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RADSYNC_DICOM_PORT", "4001")
    monkeypatch.setenv("RADSYNC_HTTP_PORT", "4002")
    settings = load_settings(toml, {"http_port": 5002, "host": None})
    assert settings.hl7_port == 3000  # TOML
    assert settings.dicom_port == 4001  # environment beats TOML
    assert settings.http_port == 5002  # flag beats environment
    assert settings.host == "127.0.0.1"  # a flag left unset changes nothing


def test_stations_are_normalised(toml: Path) -> None:
    (station,) = load_settings(toml).stations
    assert (station.ae_title, station.modality, station.charset) == ("CT01", "CT", "ISO_IR 192")


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ('hl7_port = "x"', "hl7_port"),
        ("hl7_port = 70000", "hl7_port"),
        ("unknown_key = 1", "unknown_key"),
        ('[[stations]]\nae_title = "CT01"\nmodality = "CT"\n[[stations]]\nae_title = "CT01"\nmodality = "MR"',
         "configured twice"),
        ('[[stations]]\nae_title = "A_TITLE_THAT_IS_TOO_LONG"\nmodality = "CT"', "ae_title"),
        ('[[stations]]\nae_title = "CT01"\nmodality = "CT"\ncharset = "KOI8-R"', "charset"),
    ],
)
def test_invalid_settings_are_refused_with_the_offending_key(tmp_path: Path, text: str, complaint: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text + "\n")
    with pytest.raises(ValidationError) as excinfo:
        load_settings(path)
    assert complaint in str(excinfo.value)


def test_database_url_flag_wins(tmp_path: Path) -> None:
    url = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    assert load_settings(None, {"database_url": url}).effective_database_url == url
