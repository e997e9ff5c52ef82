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
from gateway.http.auth import ServerCallers
from gateway.http.errors import GatewayJson, rendered
from gateway.http.failed_auth import FailedAuthLimit
from gateway.http.rate_limit import RateLimit
from gateway.http.request_body import read_body
from gateway.ingest.leads import LeadMemory
from gateway.ingest.pipeline import Pipeline
from gateway.ingest.sources.imports.columns import parse_mapping
from gateway.ingest.sources.imports.importer import Importer, ImportOptions
from gateway.ingest.sources.imports.readers import FORMATS, UnreadableFile, decompressed
from gateway.ingest.sources.imports.summary import Rejection, Summary

PATH = "/v1/imports"
_KEEP_IMPORTS = 100
_KEEP_REJECTIONS = 1000
_FLAGS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False, "": False}
_PARAMS = frozenset(
    {
        "pixel", "event", "map", "currency", "limited_data_use", "test_event_code", "group_by",
        "format", "max_age_days", "dry_run", "resume",
    }
)  # fmt: skip


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

    def __init__(
        self,
        pipeline: Pipeline,
        limit: RateLimit,
        failed: FailedAuthLimit,
        leads: LeadMemory | None = None,
    ) -> None:
        settings = pipeline.settings
        self._pipeline = pipeline
        self._leads = leads
        self._callers = ServerCallers(settings, limit, failed, "imports")
        self._max_body = settings.imports.max_upload_mb * 1_048_576
        self._settings = settings.imports
        self._imports: OrderedDict[str, ImportRecord] = OrderedDict()

    async def create(self, request: Request) -> Response:
        await self._callers.admit(request)
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
        await self._callers.admit(request)
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
        unknown = sorted(set(query) - _PARAMS)
        if unknown:
            raise EventError(unknown[0], f"unknown option ({', '.join(sorted(_PARAMS))})")
        try:
            mapping = parse_mapping(query.getlist("map"))
        except ValueError as exc:
            raise EventError("map", str(exc).removeprefix("--map ")) from None
        group_by = query.get("group_by")
        if group_by not in (None, "", "order_id"):
            raise EventError("group_by", "must be order_id")
        file_format = query.get("format", "auto")
        if file_format not in FORMATS:
            raise EventError("format", f"must be one of {', '.join(FORMATS)}")
        days_text = query.get("max_age_days") or str(self._settings.max_event_age_days)
        if not days_text.isdigit() or not 1 <= int(days_text) <= 28:
            raise EventError("max_age_days", "must be a whole number from 1 to 28")
        currency = (query.get("currency") or "").strip().upper()
        if currency and not (len(currency) == 3 and currency.isascii() and currency.isalpha()):
            raise EventError("currency", "must be an ISO 4217 code such as EUR")
        return ImportOptions(
            pixel=self._pixel(query.get("pixel")),
            event=query.get("event") or None,
            mapping=mapping,
            currency=currency or self._settings.default_currency,
            limited_data_use=_flag(query, "limited_data_use"),
            test_event_code=query.get("test_event_code") or None,
            group_by_order=group_by == "order_id",
            dry_run=_flag(query, "dry_run"),
            resume=_flag(query, "resume"),
            file_format=file_format,
            max_age_days=int(days_text),
            chunk_rows=self._settings.chunk_rows,
        )

    def _pixel(self, pixel: str | None) -> str:
        return self._pipeline.pixel(pixel or None, field="pixel").id


def _flag(query: Any, name: str) -> bool:
    value = _FLAGS.get(query.get(name, "").strip().lower())
    if value is None:
        raise EventError(name, "must be true or false")
    return value


def _keep(kept: list[Rejection], rejected: list[Rejection]) -> None:
    room = _KEEP_REJECTIONS - len(kept)
    if room > 0:
        kept.extend(rejected[:room])


def routes(
    pipeline: Pipeline,
    limit: RateLimit,
    failed: FailedAuthLimit,
    leads: LeadMemory | None = None,
) -> list[BaseRoute]:
    endpoint = ImportsEndpoint(pipeline, limit, failed, leads)
    renderer = GatewayJson()
    return [
        Route(PATH, rendered(endpoint.create, renderer), methods=["POST"]),
        Route(f"{PATH}/{{import_id}}", rendered(endpoint.show, renderer), methods=["GET"]),
    ]
