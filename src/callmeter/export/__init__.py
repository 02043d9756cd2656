"""Sinks: exporters that subscribe to sessions and carry their events elsewhere."""

from .jsonl import JSONLWriter

__all__ = ["JSONLWriter"]
