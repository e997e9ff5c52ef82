"""The baseline for bench/beacon.py: bare Starlette answering 204 to the same POST."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def beacon(request: Request) -> Response:
    await request.body()
    return Response(status_code=204)


app = Starlette(routes=[Route("/b", beacon, methods=["POST"])])
