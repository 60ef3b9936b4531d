"""`radsync serve`: every listener in one process, stopped cleanly by SIGTERM or Ctrl-C."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Annotated

import typer

from radsync.bootstrap import run_service
from radsync.cli.options import ConfigOpt, DatabaseUrlOpt, DataDirOpt, settings_from


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def serve(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    host: Annotated[str | None, typer.Option(help="Address to bind [default: 127.0.0.1]")] = None,
    hl7_port: Annotated[int | None, typer.Option(help="HL7 v2 MLLP port [default: 2575]")] = None,
    dicom_port: Annotated[int | None, typer.Option(help="DICOM port [default: 11112]")] = None,
    http_port: Annotated[int | None, typer.Option(help="HTTP port [default: 8080]")] = None,
    ae_title: Annotated[str | None, typer.Option(help="radsync's DICOM AE title [default: RADSYNC]")] = None,
    database_url: DatabaseUrlOpt = None,
    log_level: Annotated[str | None, typer.Option(help="DEBUG, INFO, WARNING or ERROR [default: INFO]")] = None,
    hl7_processes: Annotated[int | None, typer.Option(
        help="HL7 receiving processes sharing the port; 1 = in this process, 0 = auto [default: 0]")] = None,
) -> None:
    """Run the HL7, DICOM and HTTP listeners until SIGTERM or Ctrl-C."""
    settings = settings_from(
        config,
        data_dir=data_dir,
        host=host,
        hl7_port=hl7_port,
        dicom_port=dicom_port,
        http_port=http_port,
        ae_title=ae_title,
        database_url=database_url,
        log_level=log_level,
        hl7_processes=hl7_processes,
    )
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.log_level != "DEBUG":
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    asyncio.run(_serve(settings))


async def _serve(settings) -> None:  # type: ignore[no-untyped-def]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run_service(settings, stop)



