"""The benchmarks' shared helpers, re-exported from the focused modules that own them.

Kept so `from _common import ...` in every script goes on working; new code may import from the modules directly:

* ``_net``: loopback ports, readiness probes, TCP_NODELAY, dcmtk tools and their environment;
* ``_process``: child servers with readiness waits and SIGTERM, ``radsync serve``;
* ``_orders``: ORM^O01 v2.3.1 orders with realistic demographics, one station per modality;
* ``_mllp_load``: the asyncio MLLP load generator;
* ``_stats``: percentiles and medians; ``_tables``: ms formatting, Markdown tables, verdicts, the machine line.
"""

from __future__ import annotations

from pathlib import Path

from _mllp_load import MLLP_TRAILER, LoadResult, check_ack, frame, run_load
from _net import HOST, dcmtk_env, dcmtk_tool, free_port, healthz_ok, port_accepts, set_nodelay
from _orders import (
    DOE_FAMILIES,
    FAMILIES,
    GIVEN_F,
    GIVEN_M,
    PROCEDURES,
    STATIONS,
    Order,
    ingest_orders,
    make_order,
    orm_o01,
)
from _process import (
    RadsyncPorts,
    ServerProcess,
    radsync_command,
    running,
    start_radsync,
    variant,
    write_stations_toml,
)
from _stats import median, percentile
from _tables import machine_line, ms, print_table, verdict

BENCH_DIR = Path(__file__).resolve().parent

__all__ = [
    "BENCH_DIR",
    "DOE_FAMILIES",
    "FAMILIES",
    "GIVEN_F",
    "GIVEN_M",
    "HOST",
    "MLLP_TRAILER",
    "PROCEDURES",
    "STATIONS",
    "LoadResult",
    "Order",
    "RadsyncPorts",
    "ServerProcess",
    "check_ack",
    "dcmtk_env",
    "dcmtk_tool",
    "frame",
    "free_port",
    "healthz_ok",
    "ingest_orders",
    "machine_line",
    "make_order",
    "median",
    "ms",
    "orm_o01",
    "percentile",
    "port_accepts",
    "print_table",
    "radsync_command",
    "run_load",
    "running",
    "set_nodelay",
    "start_radsync",
    "variant",
    "verdict",
    "write_stations_toml",
]
