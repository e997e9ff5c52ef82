"""Ingest: every way an event comes in, and the one path all of them take.

Follow one event from any source to the Events API:

    ingest/sources/beacon/      browser snippet → POST /b (origin, cookies, `Observed`)
    ingest/sources/server_api   backends → POST /v1/events (API key)
    ingest/sources/relay/       TikTok clients → TikTok's paths (2.0 as is, 1.0 translated)
    ingest/sources/postback/    lead systems → /v1/postbacks/{source} (tracking rules)
    ingest/sources/imports/     CSV / JSONL files → the `import` command or POST /v1/imports
          │  each reads its own wire format into `Item`s under a `SourcePolicy` (policy.py)
          ▼
    ingest/leads.py             backend events completed from the browser's lead context
    ingest/pipeline.py          parse all or nothing, count, store, run the accept hooks
    ingest/parser.py            validation, normalisation, hashing (user.py, fields.py,
                                core/normalize.py); personal data out (privacy/scrubbing.py)
          │  `core/event.Event`: hashed, ready to send
          ▼
    storage/outbox/             durable before the sender hears 2xx (SQLite or Redis)
          ▼
    delivery/process.py         a child process (child.py) runs delivery/dispatcher.py:
    delivery/dispatcher.py      claim, batch by destination, send (client.py),
    delivery/client.py          ack / retry (retry_policy.py) / dead-letter
          ▼
    delivery/settlement.py      every batch's fate back to the serving process: the console's
    telemetry/recent.py         buffer (`RecentEvents`) and telemetry/metrics.py

Errors a source raises (`core/errors.py`) are answered by its surface's renderer
(`http/errors.py`): our JSON, or TikTok's envelope for the relay.
"""
