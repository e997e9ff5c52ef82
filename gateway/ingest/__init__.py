"""gateway/ingest"""
