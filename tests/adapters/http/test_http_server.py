"""The embedded uvicorn server: accepted connections have TCP_NODELAY (no Nagle stall on keep-alive responses)."""

from __future__ import annotations

import asyncio
import socket

from fastapi import FastAPI

from radsync.adapters.http.server import HttpServer


def test_accepted_connections_have_tcp_nodelay() -> None:
    app = FastAPI()

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"ok": "yes"}

    async def scenario() -> list[int]:
        server = HttpServer(app, "127.0.0.1", 0)
        port = await server.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")  # keep-alive: the connection stays open
            await writer.drain()
            assert b"200 OK" in await reader.readuntil(b"\r\n\r\n")
            assert server._server is not None
            accepted = [p.transport.get_extra_info("socket") for p in server._server.server_state.connections]
            flags = [s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in accepted]
            writer.close()
            return flags
        finally:
            await server.stop()

    flags = asyncio.run(scenario())
    assert flags and all(flags), "an accepted HTTP connection without TCP_NODELAY waits ~40 ms per response"
