"""Running a `Gateway` under uvicorn for `serve` and `demo`: the gateway starts first.

The outbox is opened (and delivery started) before uvicorn serves, in the loop uvicorn then
runs in, so a start-up failure is one line on stderr and a documented exit status instead of
a traceback from uvicorn's lifespan; the lifespan finds the gateway started and stops it.
"""

from __future__ import annotations

import asyncio
import socket
import sys

import uvicorn

from gateway.cli.common import EXIT_STORAGE, storage_failure
from gateway.core.errors import OutboxUnavailable
from gateway.runtime import Gateway


def run_gateway(gateway: Gateway, server: uvicorn.Server, sockets: list[socket.socket]) -> int:
    """Start `gateway`, then serve until stopped; 0, or EXIT_STORAGE with one line when the
    outbox cannot be used. Ctrl-C ends it with KeyboardInterrupt, as uvicorn's own run."""
    with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
        return runner.run(_serve(gateway, server, sockets))


async def _serve(gateway: Gateway, server: uvicorn.Server, sockets: list[socket.socket]) -> int:
    try:
        await gateway.start()
    except OutboxUnavailable as exc:
        print(f"tiktok-gateway: cannot start: {storage_failure(exc)}", file=sys.stderr)
        return EXIT_STORAGE
    try:
        await server.serve(sockets)
    finally:
        await gateway.stop()  # already stopped by the lifespan, unless uvicorn never ran it
    return 0
