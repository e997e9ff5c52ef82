"""Ingest: every way an event comes in (`sources/`), and the one path all of them take.

Each source reads its own wire format into `Item`s under a `SourcePolicy` (policy.py) and
calls the pipeline (pipeline.py), which parses (parser.py, user.py, fields.py), completes
backend events from the lead context (leads.py), stores durably and runs the accept hooks.
docs/development.md#layout follows one event from a source to the Events API.
"""
