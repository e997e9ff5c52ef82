"""File imports: offline and CRM conversions from CSV, TSV or JSON Lines exports.

readers.py    bytes → rows (gzip, BOM, sniffed delimiter, JSON Lines; malformed lines)
columns.py    a row's columns → an input event (names, aliases, --map, order lines)
rules.py      identity keys per event source, the event-id recipe, the 28-day window
options.py    the options, checked once for the command and the upload
importer.py   chunks through the Pipeline, each stored with its checkpoint; --resume
summary.py    counts, match-key coverage, the per-row report
endpoint.py   POST /v1/imports and GET /v1/imports/{id}
"""

from gateway.ingest.sources.imports.endpoint import SOURCE

__all__ = ["SOURCE"]
