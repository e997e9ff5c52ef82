"""gateway/ingest/sources/beacon"""
