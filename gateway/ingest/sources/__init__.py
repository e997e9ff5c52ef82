"""One folder (or module) per source, each exposing a `SOURCE` (`ingest/source.py`) and
importing nothing from the others; `app.SOURCES` lists them."""
