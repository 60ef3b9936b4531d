"""Settings: defaults < TOML file < RADSYNC_* environment variables < command-line flags; validated once.

Everything radsync does is decided by one ``Settings`` object built at start and passed down; nothing reads
the environment later (STYLE.md: load configuration once, strictly).
"""

from __future__ import annotations

import contextvars
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from radsync.app.outbox import OutboxEvent

_config_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar("radsync_config_file", default=None)

_T = TypeVar("_T")

Charset = Literal["ISO_IR 192", "ISO_IR 100", "ASCII"]


class StationSettings(BaseModel):
    """A modality that queries the worklist. ``charset`` is what its MWL answers are encoded in."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ae_title: str = Field(min_length=1, max_length=16)
    modality: str = Field(min_length=1, max_length=16)
    name: str = ""
    location: str = ""
    charset: Charset = "ISO_IR 192"

    @field_validator("ae_title")
    @classmethod
    def _ae_title(cls, value: str) -> str:
        value = value.strip()
        if "\\" in value or not value.isprintable():
            raise ValueError("an AE title may not contain a backslash or control characters")
        return value

    @field_validator("modality")
    @classmethod
    def _modality(cls, value: str) -> str:
        return value.strip().upper()


class HL7DestinationSettings(BaseModel):
    """An HL7 v2 receiver (usually the RIS) that radsync sends results and status changes to, over MLLP.

    Timeouts and backoffs are in seconds. A failed attempt is retried after ``backoff_initial`` doubling up to
    ``backoff_max`` (with jitter); after ``max_attempts`` failed attempts the message becomes a dead letter and the
    queue moves on. An unreachable receiver (connection refused) is not the message's fault and does not count.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    events: tuple[OutboxEvent, ...] = ("report", "status")
    # How order status reaches this receiver: ORM^O01 ORC-1 SC (IHE SWF, v2.3.1-style RIS) or OMI^O23 (SWF.b, v2.5.1).
    status_message: Literal["ORM^O01", "OMI^O23"] = "ORM^O01"
    connect_timeout: float = Field(5.0, gt=0)
    ack_timeout: float = Field(10.0, gt=0)
    max_attempts: int = Field(10, ge=1)
    backoff_initial: float = Field(1.0, gt=0)
    backoff_max: float = Field(300.0, gt=0)
    # AR/CR: the receiver refuses the message type, version or processing ID; resending unchanged is useless.
    dead_on_reject: bool = True
    # AE/CE: a content error. HL7 says resending unchanged fails again, but receivers also answer AE for transient
    # trouble (order not there yet), so the default retries.
    dead_on_error: bool = False

    @field_validator("events")
    @classmethod
    def _distinct_events(cls, events: tuple[OutboxEvent, ...]) -> tuple[OutboxEvent, ...]:
        if "forward" in events:
            raise ValueError("'forward' is for [[dicom_destinations]] (forward = true), not HL7 destinations")
        return tuple(dict.fromkeys(events))

    @model_validator(mode="after")
    def _backoff_range(self) -> HL7DestinationSettings:
        if self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_max must not be smaller than backoff_initial")
        return self


class DicomDestinationSettings(BaseModel):
    """A DICOM AE radsync talks to, named by its AE title: a C-MOVE destination (PS3.4 C.4.2), the listener of a
    storage commitment requester, and a Q/R client whose C-FIND answers are encoded in ``charset``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ae_title: str = Field(min_length=1, max_length=16)
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    charset: Charset = "ISO_IR 192"
    # Forwarding (docs/forwarding.md): every instance of a reconciled study is C-STOREd here through the outbox,
    # with the current truth applied. The outbox queue is named by the AE title. Retries as for HL7 destinations.
    forward: bool = False
    connect_timeout: float = Field(5.0, gt=0)
    response_timeout: float = Field(30.0, gt=0)  # seconds to wait for a C-STORE response
    max_attempts: int = Field(10, ge=1)
    backoff_initial: float = Field(1.0, gt=0)
    backoff_max: float = Field(300.0, gt=0)

    @property
    def name(self) -> str:
        """The outbox destination name of a forwarding destination: its AE title."""
        return self.ae_title

    @field_validator("ae_title")
    @classmethod
    def _ae_title(cls, value: str) -> str:
        value = value.strip()
        if not value or "\\" in value or not value.isprintable():
            raise ValueError("an AE title may not be blank or contain a backslash or control characters")
        return value

    @model_validator(mode="after")
    def _backoff_range(self) -> DicomDestinationSettings:
        if self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_max must not be smaller than backoff_initial")
        return self


class ReconciliationSettings(BaseModel):
    """How arriving studies are matched to orders (docs/reconciliation.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # strict: patient ID, name and birth date must agree; tolerant: small name typos pass; lenient: ID only.
    identity: Literal["strict", "tolerant", "lenient"] = "strict"
    accept_unqualified_patient_id: bool = True
    date_window_days: int = Field(1, ge=0, le=30)
    patient_rule_despite_unknown_accession: bool = False
    images_complete_started_steps: bool = False
    candidate_limit: int = Field(5, ge=1, le=50)
    candidate_window_days: int = Field(7, ge=0, le=365)
    # Seconds between reconciliation sweeps in `radsync serve` (0 turns the sweep off); see docs/reconciliation.md.
    sweep_seconds: float = Field(60.0, ge=0, le=86_400)


class _TomlFile(PydanticBaseSettingsSource):
    """The TOML file named by ``--config`` (or RADSYNC_CONFIG), read once."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        path = _config_file.get()
        self._data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8")) if path else {}

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RADSYNC_", extra="forbid", frozen=True)

    data_dir: Path = Path("radsync-data")
    host: str = "127.0.0.1"
    hl7_port: int = Field(2575, ge=0, le=65535)
    dicom_port: int = Field(11112, ge=0, le=65535)
    http_port: int = Field(8080, ge=0, le=65535)
    ae_title: str = Field("RADSYNC", min_length=1, max_length=16)
    database_url: str = ""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    # Wall-clock zone of the modalities: HL7 times with a UTC offset are converted to it for DA/TM
    # (MAPPING.md §2.2). Empty = this machine's local zone.
    timezone: str = ""
    # Decoding when MSH-18 is empty: HL7 says ASCII, real senders send UTF-8 or Latin-1 (FIELD-NOTES C.20).
    # UTF-8 is tried first; bytes that are not valid UTF-8 fall back to this.
    hl7_fallback_charset: str = "cp1252"
    hl7_max_message_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    # Group commit: how many inbound HL7 messages may share one database transaction.
    hl7_max_batch: int = Field(64, ge=1, le=1000)
    # Receiving processes sharing the HL7 port (one listening socket): the intake's mapping and statements are
    # GIL-bound per process, so many connections scale only across processes. 0 = auto (docs/hl7.md, "Receiving
    # processes"); 1 = in the serving process.
    hl7_processes: int = Field(0, ge=0, le=64)
    mwl_max_answers: int = Field(5000, ge=1)
    # Receiving processes sharing the DICOM port (one listening socket): pynetdicom is GIL-bound per process, so C-STORE
    # scales with associations only across processes. 0 = auto: min(4, CPU count); 1 = in the serving process.
    dicom_processes: int = Field(0, ge=0, le=64)
    # C-STORE answer for a known SOP Instance UID with other content (original kept, newcomer set aside):
    # "warning" = 0xB000 with an Error Comment, "success" = 0x0000 (FIELD-NOTES §20: configurable).
    dicom_duplicate_status: Literal["warning", "success"] = "warning"
    # Answer MWL queries that carry no Scheduled Station AE Title only with the steps of the calling AE's station
    # (Orthanc's FilterIssuerAet): stops one room seeing another's list when the modality omits the key.
    mwl_filter_by_calling_ae: bool = False
    stations: tuple[StationSettings, ...] = ()
    reconciliation: ReconciliationSettings = ReconciliationSettings()
    hl7_destinations: tuple[HL7DestinationSettings, ...] = ()
    # Query/Retrieve: C-MOVE destinations, and the most answers one C-FIND returns before refusing with 0xA700.
    dicom_destinations: tuple[DicomDestinationSettings, ...] = ()
    qr_max_answers: int = Field(10000, ge=1)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlFile(settings_cls))

    @field_validator("stations")
    @classmethod
    def _unique_ae_titles(cls, stations: tuple[StationSettings, ...]) -> tuple[StationSettings, ...]:
        return _unique(stations, "station AE title", lambda s: s.ae_title)

    @field_validator("hl7_destinations")
    @classmethod
    def _unique_destination_names(
        cls, destinations: tuple[HL7DestinationSettings, ...]
    ) -> tuple[HL7DestinationSettings, ...]:
        return _unique(destinations, "HL7 destination", lambda d: d.name)

    @field_validator("dicom_destinations")
    @classmethod
    def _unique_dicom_destinations(
        cls, destinations: tuple[DicomDestinationSettings, ...]
    ) -> tuple[DicomDestinationSettings, ...]:
        return _unique(destinations, "DICOM destination", lambda d: d.ae_title)

    @model_validator(mode="after")
    def _distinct_outbox_destinations(self) -> Settings:
        """A forwarding destination's outbox queue is its AE title: it must not be an HL7 destination's name."""
        names = {d.name for d in self.hl7_destinations}
        for destination in self.dicom_destinations:
            if destination.forward and destination.ae_title in names:
                raise ValueError(f"forwarding AE title {destination.ae_title!r} is also an HL7 destination's name")
        return self

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'radsync.db').resolve()}"


def _unique(entries: tuple[_T, ...], what: str, key: Callable[[_T], str]) -> tuple[_T, ...]:
    """Refuse a list where two entries share ``key`` (an AE title or name must name one peer)."""
    seen: set[str] = set()
    for entry in entries:
        if key(entry) in seen:
            raise ValueError(f"{what} {key(entry)!r} is configured twice")
        seen.add(key(entry))
    return entries


def load_settings(config_file: Path | None = None, overrides: Mapping[str, Any] | None = None) -> Settings:
    """Build the settings; ``overrides`` (command-line flags) win, ``None`` values in it are ignored."""
    token = _config_file.set(config_file)
    try:
        given = {k: v for k, v in (overrides or {}).items() if v is not None}
        return Settings(**given)
    finally:
        _config_file.reset(token)
