"""A self-hosted, first-party server-side tag gateway for the TikTok Events API."""

__version__ = "0.1.0"
