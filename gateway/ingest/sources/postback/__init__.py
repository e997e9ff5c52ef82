"""Lead-lifecycle postbacks: a lead system's URL with macros becomes TikTok events by rules
(the rules themselves are configuration: settings/tracking/).

    request.py    a postback's parameters (query, form or JSON) → our fields
    process.py    rules → events with the lead context → outbox (endpoint and CLI alike)
    endpoint.py   GET/POST /v1/postbacks/{source}: authenticate, evaluate, store, answer

The rules and their templates are `settings/tracking/`; the last postbacks per source are
kept by `storage/postback_log.py`.
"""

from gateway.ingest.sources.postback.endpoint import SOURCE

__all__ = ["SOURCE"]
