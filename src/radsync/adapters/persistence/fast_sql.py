"""Hot statements run straight on the DBAPI cursor, with SQL and bind processing compiled once by SQLAlchemy.

Why: the HL7 intake runs about ten statements per order, and ``Connection.execute`` spends ~60–90 µs on each
(cache key, execution context, events, result wrapping) against ~10 µs for the statement itself on SQLite;
that overhead was most of an order's write time (PERF-NOTES, README performance table).

What stays the same: the statement is the module's own Core construct, compiled by SQLAlchemy for the
connection's dialect (``?`` for SQLite, ``%(name)s`` with casts for psycopg), and every parameter goes through
the bind processors SQLAlchemy would apply (JSON, DateTime on SQLite, bytea), so the stored values are
identical. The cursor belongs to the Connection's own DBAPI connection, so the statement runs inside the
caller's transaction or savepoint.

What is given up for these statements only: SQLAlchemy's cursor events and echo logging. A statement this
module cannot run faithfully (Python-side column defaults, ``IN`` over a list the caller passes, literal-execute
parameters, parameters it was not compiled for) runs through ``Connection.execute`` instead.
DBAPI errors are re-raised as SQLAlchemy's ``DBAPIError`` (a lost connection is invalidated, as there).
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, exc
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement, Executable


@dataclass(frozen=True, slots=True)
class _Plan:
    statement: Executable  # kept alive: the cache is keyed by its id()
    sql: str
    positional: tuple[str, ...] | None  # bind names in placeholder order (qmark); None for named (pyformat)
    defaults: dict[str, Any]  # values bound in the statement itself (e.g. direction = 'in')
    processors: tuple[tuple[str, Callable[[Any], Any]], ...]
    results: tuple[Callable[[Any], Any] | None, ...] | None  # per column; None when no column needs one
    row: Any  # a namedtuple class over the result column keys: rows read by index, unpacking or attribute
    returns_rows: bool


# Keyed by the statement object's id (the plan holds the statement, so the id stays its own): for statements built
# once, as module constants.
_PLANS: dict[tuple[int, str, tuple[str, ...]], _Plan | None] = {}
_MAX_PLANS = 1024


def rows(conn: Connection, statement: Executable, params: Mapping[str, Any]) -> list[Any]:
    """Run ``statement`` with ``params``; return every row (empty for a statement without rows).

    Rows are named tuples: ``row[0]``, ``a, b = row``, ``row.column`` and ``row._asdict()`` (for ``Row._mapping``).
    """
    key = (id(statement), conn.dialect.name, tuple(params))
    try:
        plan = _PLANS[key]
    except KeyError:
        if len(_PLANS) >= _MAX_PLANS:  # meant for statements built once; a caller building them per call
            _PLANS.clear()  # must not grow the cache for ever
        plan = _PLANS[key] = _plan(statement, conn.dialect, tuple(params))
    if plan is None:
        result = conn.execute(statement, dict(params))  # type: ignore[call-overload]
        return [_row_type(tuple(result.keys()))._make(r) for r in result] if result.returns_rows else []
    values = plan.defaults | dict(params) if plan.defaults else dict(params)
    for name, process in plan.processors:
        values[name] = process(values[name])
    args: Any = values if plan.positional is None else [values[name] for name in plan.positional]
    dbapi_connection = conn.connection.dbapi_connection
    assert dbapi_connection is not None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(plan.sql, args)
        fetched = cursor.fetchall() if plan.returns_rows else []
    except conn.dialect.loaded_dbapi.Error as error:
        disconnect = conn.dialect.is_disconnect(error, dbapi_connection, cursor)
        if disconnect:
            conn.invalidate(error)
        raise exc.DBAPIError.instance(
            plan.sql, args, error, conn.dialect.loaded_dbapi.Error, connection_invalidated=disconnect,
            dialect=conn.dialect,
        ) from error
    finally:
        cursor.close()
    make = plan.row._make
    if plan.results is None:
        return [make(r) for r in fetched]
    return [make(p(v) if p is not None else v for p, v in zip(plan.results, r, strict=True)) for r in fetched]


def scalar(conn: Connection, statement: Executable, params: Mapping[str, Any]) -> Any:
    """The first column of the first row, or None (``INSERT ... RETURNING pk``, single-value lookups)."""
    found = rows(conn, statement, params)
    return found[0][0] if found else None


def execute_many(conn: Connection, statement: Executable, params: Sequence[Mapping[str, Any]]) -> None:
    """Run a statement without result rows once per parameter set (one call each: few rows, no RETURNING)."""
    for one in params:
        rows(conn, statement, one)


def _plan(statement: Executable, dialect: Dialect, keys: tuple[str, ...]) -> _Plan | None:
    """Compile for this dialect and these parameter names; None when only ``Connection.execute`` is faithful."""
    compiled: Any = cast(ClauseElement, statement).compile(dialect=dialect, column_keys=list(keys))
    if (
        compiled.insert_prefetch or compiled.update_prefetch or compiled.literal_execute_params
        or compiled.escaped_bind_names or dialect.paramstyle not in ("qmark", "pyformat")
        or any(b.expanding and b.key in keys for b in compiled.binds.values())
    ):
        return None
    bound = compiled.construct_params(_check=False)
    if set(keys) - set(bound):
        return None  # a parameter the statement does not use: let SQLAlchemy say so
    sql, processors = compiled.string, dict(compiled._bind_processors)
    positional = tuple(compiled.positiontup) if dialect.positional else None
    if compiled.post_compile_params:
        # An IN over a list fixed in the statement itself (state IN ('unassigned', 'matched')): it expands the
        # same way every time, so SQLAlchemy's own expansion is done once, here. Lists the caller passes vary.
        try:
            expanded = compiled._process_parameters_for_postcompile(dict(bound))
        except (AttributeError, TypeError):  # another SQLAlchemy's internals: stay faithful, take the slow path
            return None
        sql, processors, bound = expanded.statement, dict(expanded.processors), expanded.parameters
        positional = tuple(expanded.positiontup) if dialect.positional else None
    defaults = {name: value for name, value in bound.items() if name not in keys}
    if any(value is None for value in defaults.values()):
        return None  # a required parameter is missing: SQLAlchemy raises the right error
    result_types = [column[3] for column in compiled._result_columns]  # SELECT columns or RETURNING
    columns = tuple(column[0] for column in compiled._result_columns)
    results = tuple(t._cached_result_processor(dialect, None) for t in result_types)
    return _Plan(
        statement=statement,
        sql=sql,
        positional=positional,
        defaults=defaults,
        processors=tuple(processors.items()),
        results=results if any(p is not None for p in results) else None,
        row=_row_type(columns),
        returns_rows=bool(result_types),
    )


_ROW_TYPES: dict[tuple[str, ...], Any] = {}


def _row_type(keys: tuple[str, ...]) -> Any:
    row = _ROW_TYPES.get(keys)
    if row is None:
        row = _ROW_TYPES[keys] = namedtuple("FastRow", keys, rename=True)  # type: ignore[misc]
    return row
