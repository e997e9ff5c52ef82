"""Ingest: every way an event comes in, and the one path all of them take.

Follow one event from any source to the Events API by folder names alone:

    ingest/sources/beacon/     browser snippet → POST /b (origin, cookies, what the server
                               observes of the visitor: `Observed`)
    ingest/sources/server_api  backends → POST /v1/events (API key)
    ingest/sources/relay/      TikTok clients → TikTok's own paths (Access-Token; Events 2.0
                               as it is, 1.0 translated field by field; TikTok's envelope)
    ingest/sources/postback/   lead systems → /v1/postbacks/{source} (tracking rules)
    ingest/sources/<next>/     file imports: one folder each, one line where routes or
                               commands are registered
          │  each source reads its own wire format into `Item`s and picks a `SourcePolicy`
          ▼
    ingest/pipeline.py         Pipeline.ingest(items, policy): parse all or nothing, count,
    ingest/parser.py           store, run accept hooks (wake delivery, record the event)
    ingest/user.py, fields.py  validation, normalisation and hashing (core/normalize.py)
    ingest/scrubbing.py        personal data out of every other text and URL (core/redact.py)
          │  `core/event.Event`: hashed, ready to send
          ▼
    outbox/                    durable before the sender hears 2xx (SQLite or Redis); the
                               wire-ready `data` element stored beside its destination
          ▼
    delivery/process.py        a child process runs delivery/dispatcher.py: claim, batch by
    delivery/dispatcher.py     destination, send (delivery/client.py), ack / retry /
    delivery/client.py         dead-letter (delivery/retry_policy.py)
          ▼
    delivery/observe.py        every batch's fate back to the serving process: RecentEvents
                               (the console) and the counters of web/metrics.py

Errors a source raises (`core/errors.py`) are answered by its surface's renderer
(`web/errors.py`): our JSON, or TikTok's envelope for the relay.
"""
