"""Lead-lifecycle postbacks: a lead system's URL with macros becomes TikTok events by rules.

    templates.py    `{placeholder}` templates of a rule's fields
    conditions.py   filters (equals, one of, none of) and price restrictions
    rules.py        rules, their evaluation, the raw events they build
    request.py      a postback's parameters (query, form or JSON) → our fields
    process.py      rules → events with the lead context → outbox (endpoint and CLI alike)
    log.py          the last postbacks per source, in the outbox's backend
    endpoint.py     GET/POST /v1/postbacks/{source}: authenticate, evaluate, store, answer

Kept free of imports at package level: the settings compile rules with the engine modules.
"""
