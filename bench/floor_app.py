"""The beacon's durable floor: bare Starlette plus the outbox's durable write of the row a
beacon stores, before the 204 — no parsing, enrichment or hashing.

`bench/beacon_cost.py` states the gateway's cost against it (the target: at most 1.3×).
The row is the one the gateway stores for the benchmark's beacon, parsed once at start by
the gateway's own parser; each request stores it again through the same SQLite writer
(group commit, `synchronous` at its default), so only what a beacon must do to be durable
is counted. The outbox file is named by FLOOR_OUTBOX (a path).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.ingest.parser import ParseRules, parse_event
from gateway.ingest.policy import BROWSER
from gateway.settings import OutboxSettings, parse_settings
from gateway.storage.backend import open_backend
from gateway.storage.outbox import Prepared

_SETTINGS = parse_settings(
    {"pixels": [{"id": "CBENCHPIXEL001", "access_token": "bench-token"}]}, {}
)
_BACKEND = open_backend(
    OutboxSettings(url=f"sqlite:///{os.environ.get('FLOOR_OUTBOX', 'floor.sqlite3')}")
)


def _stored_row() -> Prepared:
    """The prepared row of the benchmark's beacon, as the gateway's parser makes it."""
    from bench.beacon_cost import beacon_body

    raw = json.loads(beacon_body(0))
    parsed = parse_event(
        raw,
        pixel=_SETTINGS.pixels[0],
        rules=ParseRules.from_settings(_SETTINGS),
        now=time.time(),
        policy=BROWSER,
    )
    return _BACKEND.outbox.prepare(parsed.events)


_ROW = _stored_row()


async def beacon(request: Request) -> Response:
    await request.body()
    await _BACKEND.outbox.add_prepared(_ROW)
    return Response(status_code=204)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    await _BACKEND.outbox.open()
    try:
        yield
    finally:
        await _BACKEND.close()


app = Starlette(routes=[Route("/b", beacon, methods=["POST"])], lifespan=lifespan)
