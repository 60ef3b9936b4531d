"""`radsync studies`: the Unassigned queue on the command line (works while the server runs).

Each command opens the database from the settings, runs one use case in one transaction (the same services
the HTTP API uses, built by ``bootstrap.build_container``) and renders the result with Rich. Exit codes:
0 done, 1 not found or refused (a red message says why), 2 bad settings or usage.
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Protocol, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from radsync.adapters.http.study_json import study_json
from radsync.adapters.persistence.unit_of_work import SqlUnitOfWork, transaction
from radsync.app.outbound import NO_OUTBOUND
from radsync.app.reconcile import LinkOrder, ManualReconcile, Split, Unlink
from radsync.app.studies import StudyService, StudyView
from radsync.bootstrap import build_container
from radsync.cli.options import ConfigOpt, DatabaseUrlOpt, DataDirOpt, settings_from
from radsync.cli.study_render import render_queue, render_study
from radsync.clock import utc_now
from radsync.domain.errors import DomainError
from radsync.domain.ids import EntityId, Issuer
from radsync.domain.study import StudyState

app = typer.Typer(help="The Unassigned queue: studies, candidate orders, manual links.", no_args_is_help=True)

T = TypeVar("T")
StateOpt = Annotated[StudyState, typer.Option("--state", help="Which queue to show.", case_sensitive=False)]
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Why (required; kept in the history).")]
UserOpt = Annotated[str | None, typer.Option("--user", help="Who acts [default: your login name].")]
IssuerOpt = Annotated[str | None, typer.Option("--issuer", help="Accession issuer, when ambiguous.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the same JSON as the HTTP API.")]


@app.command("list")
def list_command(
    state: StateOpt = StudyState.UNASSIGNED,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Studies in a queue, oldest first, with their best candidate order and its score."""
    with _service(config, data_dir, database_url) as run:
        views = run(lambda s, uow: s.list_studies(uow, state, limit=limit, offset=offset), write=False)
    if as_json:
        _print_json([study_json(v) for v in views])
        return
    _out().print(render_queue(views, state))


@app.command("show")
def show_command(
    study_instance_uid: Annotated[str, typer.Argument(metavar="STUDY_UID")],
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """One study: as received, state, links, candidates with their score components, and history."""
    with _service(config, data_dir, database_url) as run:
        view = run(lambda s, uow: s.get_study(uow, study_instance_uid), write=False)
    _show(view, as_json)


@app.command("reconcile")
def reconcile_command(
    study_instance_uid: Annotated[str, typer.Argument(metavar="STUDY_UID")],
    accession: Annotated[str, typer.Argument(metavar="ACCESSION")],
    reason: ReasonOpt = None,
    user: UserOpt = None,
    issuer: IssuerOpt = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Link a study to the order with ACCESSION (and so to that order's patient)."""
    command = ManualReconcile(
        study_instance_uid, _accession(accession, issuer), _user(user), _required(reason)
    )
    with _service(config, data_dir, database_url) as run:
        view = run(lambda s, uow: s.reconcile_manually(uow, command), write=True)
    _show(view, as_json, done=f"linked to {accession}")


@app.command("unlink")
def unlink_command(
    study_instance_uid: Annotated[str, typer.Argument(metavar="STUDY_UID")],
    accession: Annotated[str | None, typer.Option("--accession", help="Only this order's link.")] = None,
    reason: ReasonOpt = None,
    user: UserOpt = None,
    issuer: IssuerOpt = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Undo a study's links (all, or one order's); without links it returns to the Unassigned queue."""
    command = Unlink(
        study_instance_uid,
        _user(user),
        _required(reason),
        _accession(accession, issuer) if accession else None,
    )
    with _service(config, data_dir, database_url) as run:
        view = run(lambda s, uow: s.unlink(uow, command), write=True)
    _show(view, as_json, done="unlinked")


@app.command("link")
def link_command(
    study_instance_uid: Annotated[str, typer.Argument(metavar="STUDY_UID")],
    accession: Annotated[str, typer.Argument(metavar="ACCESSION")],
    reason: ReasonOpt = None,
    user: UserOpt = None,
    issuer: IssuerOpt = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Grouped procedures: the study fulfils the order with ACCESSION too (refused if another patient's)."""
    command = LinkOrder(study_instance_uid, _accession(accession, issuer), _user(user), _required(reason))
    with _service(config, data_dir, database_url) as run:
        view = run(lambda s, uow: s.link_order(uow, command), write=True)
    _show(view, as_json, done=f"linked to {accession}")


@app.command("unlink-order")
def unlink_order_command(
    study_instance_uid: Annotated[str, typer.Argument(metavar="STUDY_UID")],
    accession: Annotated[str, typer.Argument(metavar="ACCESSION")],
    reason: ReasonOpt = None,
    user: UserOpt = None,
    issuer: IssuerOpt = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Remove one order's link from a study (the other links stay)."""
    command = Unlink(study_instance_uid, _user(user), _required(reason), _accession(accession, issuer))
    with _service(config, data_dir, database_url) as run:
        view = run(lambda s, uow: s.unlink(uow, command), write=True)
    _show(view, as_json, done=f"unlinked from {accession}")


@app.command("split")
def split_command(
    study_instance_uid: Annotated[str, typer.Argument(metavar="STUDY_UID")],
    accession: Annotated[str, typer.Argument(metavar="ACCESSION")],
    series: Annotated[list[str], typer.Option("--series", help="A Series Instance UID to move (repeat).")],
    new_uid: Annotated[
        str | None, typer.Option("--new-study-uid", help="The new study's UID [default: generated].")
    ] = None,
    reason: ReasonOpt = None,
    user: UserOpt = None,
    issuer: IssuerOpt = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Move the --series to a new study that fulfils the order with ACCESSION (files are not modified)."""
    command = Split(
        study_instance_uid,
        tuple(series),
        _accession(accession, issuer),
        _user(user),
        _required(reason),
        (new_uid or "").strip(),
    )
    with _service(config, data_dir, database_url) as run:
        view = run(lambda s, uow: s.split(uow, command), write=True)
    _show(view, as_json, done=f"split off as {view.study.study_instance_uid}")


# -- plumbing ------------------------------------------------------------------------------------------------


class _Run(Protocol):
    def __call__(self, work: Callable[[StudyService, SqlUnitOfWork], T], *, write: bool) -> T: ...


@contextmanager
def _service(config: Path | None, data_dir: Path | None, database_url: str | None) -> Iterator[_Run]:
    """Build the services from the settings; yield ``run(work, write=...)``; refuse domain errors with exit 1."""
    settings = settings_from(config, data_dir=data_dir, database_url=database_url)
    container = build_container(settings)

    def run(work: Callable[[StudyService, SqlUnitOfWork], T], *, write: bool) -> T:
        # A write may complete an order: its status then goes to the RIS through the outbox like over HTTP; the
        # running server's delivery workers pick the row up (they poll), this process only commits it.
        engine, outbound = (container.engines.write, container.outbound) if write else (container.engines.read, NO_OUTBOUND)
        with transaction(engine, utc_now, outbound) as uow:
            return work(container.studies, uow)

    try:
        yield run
    except DomainError as exc:
        where = f" ({exc.field})" if exc.field else ""
        _err().print(f"[bold red]refused:[/] [red]{escape(exc.message + where)}[/]")
        raise typer.Exit(1) from None
    finally:
        container.engines.dispose()


def _show(view: StudyView, as_json: bool, done: str = "") -> None:
    if as_json:
        _print_json(study_json(view, with_history=True))
        return
    out = _out()
    if done:
        out.print(f"[green]{escape(done)}[/]: study is now [bold]{view.study.state.value}[/]")
    out.print(render_study(view))


def _required(reason: str | None) -> str:
    if reason is None or not reason.strip():
        _err().print(
            '[bold red]refused:[/] [red]a reason is required: --reason "..." (kept in the history)[/]'
        )
        raise typer.Exit(1)
    return reason.strip()


def _user(user: str | None) -> str:
    if user and user.strip():
        return user.strip()
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "cli"


def _accession(value: str, issuer: str | None) -> EntityId:
    issuer = (issuer or "").strip()
    return EntityId(value.strip(), Issuer(issuer)) if issuer else EntityId(value.strip())


def _print_json(data: object) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _out() -> Console:
    return Console(highlight=False)


def _err() -> Console:
    return Console(stderr=True, highlight=False)
