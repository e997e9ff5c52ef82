"""gateway/ingest/sources"""
