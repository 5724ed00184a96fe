"""Mediaflow: audio and video into searchable, summarized knowledge."""

__version__ = "0.1.0"
