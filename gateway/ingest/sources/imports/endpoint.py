"""The HTTP upload, for systems that push files rather than run a command.

    POST /v1/imports?pixel=…&event=Purchase&map=E-Mail=email…  → 202 {"import_id", "summary"…}
    GET /v1/imports/{id} → the same record (status, progress while it runs, summary)

The `Importer` and options are the command's, the keys the server API's; the answer comes
once every row is stored or rejected. The body (CSV, TSV or JSON Lines, gzip) stays in memory
(`[imports] max_upload_mb`), never on disk; `resume=true` skips chunks already stored.
"""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.core.errors import EventError
from gateway.http.auth import Gate
from gateway.http.errors import GatewayJson, rendered
from gateway.http.request_body import read_body
from gateway.ingest.leads import LeadMemory
from gateway.ingest.pipeline import Pipeline
from gateway.ingest.policy import SourcePolicy
from gateway.ingest.source import SourceContext
from gateway.ingest.sources.imports.importer import IMPORT, Importer
from gateway.ingest.sources.imports.options import ImportOptions
from gateway.ingest.sources.imports.readers import UnreadableFile, decompressed
from gateway.ingest.sources.imports.summary import Rejection, Summary

PATH = "/v1/imports"
_KEEP_IMPORTS = 100
_KEEP_REJECTIONS = 1000


@dataclass
class ImportRecord:
    id: str
    started: float
    status: str = "running"
    summary: Summary | None = None
    rejections: list[Rejection] = field(default_factory=list)
    error: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"import_id": self.id, "status": self.status}
        if self.summary is not None:
            body["summary"] = self.summary.to_json()
        body["rejections"] = [
            {"line": r.line, "field": r.field, "reason": r.reason} for r in self.rejections
        ]
        if self.error is not None:
            body["error"] = self.error
        return body


class ImportsEndpoint:
    """POST /v1/imports and GET /v1/imports/{id}; the last imports are kept in memory."""

    def __init__(self, pipeline: Pipeline, gate: Gate, leads: LeadMemory | None = None) -> None:
        """`gate` checks the client's limits, then its API key (the server API's)."""
        settings = pipeline.settings
        self._pipeline = pipeline
        self._leads = leads
        self._gate = gate
        self._max_body = settings.imports.max_upload_mb * 1_048_576
        self._imports: OrderedDict[str, ImportRecord] = OrderedDict()

    async def create(self, request: Request) -> Response:
        await self._gate.admit(request)
        options = self._options(request)
        length = request.headers.get("content-length")
        body = await read_body(request.receive, length, self._max_body)
        if not body.strip():
            raise EventError("body", "empty: send the file as the request body")
        record = ImportRecord(uuid.uuid4().hex, time.time())
        importer = Importer(
            self._pipeline,
            options,
            report=lambda rejected: _keep(record.rejections, rejected),
            progress=lambda summary: setattr(record, "summary", summary),
            leads=None if options.dry_run else self._leads,
        )
        self._remember(record)
        try:
            record.summary = await importer.run(decompressed(io.BytesIO(body)))
        except UnreadableFile as exc:
            record.status = "failed"
            record.error = {"error": "invalid_file", "message": str(exc)}
            raise EventError("body", str(exc)) from None
        except EventError as exc:
            record.status = "failed"
            record.error = {"error": exc.error, "field": exc.field, "message": exc.message}
            raise
        except (Exception, asyncio.CancelledError):
            record.status = "failed"  # e.g. the outbox went away: resume=true goes on
            record.summary = importer.summary
            raise
        record.status = "checked" if options.dry_run else "stored"
        return JSONResponse(record.to_json(), status_code=202)

    async def show(self, request: Request) -> Response:
        await self._gate.admit(request)
        record = self._imports.get(request.path_params["import_id"])
        if record is None:
            return JSONResponse(
                {"error": "not_found", "message": "no such import (kept: the last 100)"}, 404
            )
        return JSONResponse(record.to_json())

    def _remember(self, record: ImportRecord) -> None:
        self._imports[record.id] = record
        while len(self._imports) > _KEEP_IMPORTS:
            self._imports.popitem(last=False)

    def _options(self, request: Request) -> ImportOptions:
        query = request.query_params
        params: dict[str, Any] = dict(query)
        if "map" in params:
            params["map"] = query.getlist("map")
        options = ImportOptions.from_params(params, self._pipeline.settings)
        self._pipeline.pixel(options.pixel, field="pixel")  # refused before the body is read
        return options


def _keep(kept: list[Rejection], rejected: list[Rejection]) -> None:
    room = _KEEP_REJECTIONS - len(kept)
    if room > 0:
        kept.extend(rejected[:room])


@dataclass(frozen=True)
class ImportsSource:
    name: str = "imports"
    policy: SourcePolicy = IMPORT

    def routes(self, context: SourceContext) -> list[BaseRoute]:
        gate = context.auth.gate("imports", context.limits.server_api)
        endpoint = ImportsEndpoint(context.pipeline, gate, context.leads)
        renderer = GatewayJson()
        return [
            Route(PATH, rendered(endpoint.create, renderer), methods=["POST"]),
            Route(f"{PATH}/{{import_id}}", rendered(endpoint.show, renderer), methods=["GET"]),
        ]


SOURCE = ImportsSource()
