"""Sinks: they receive the records of the sessions they are attached to and carry them
elsewhere. :mod:`.sink` holds the contract and the queue-and-worker base."""

from .jsonl import JSONLWriter
from .sink import QueueSink, Sink, SinkBase

__all__ = ["JSONLWriter", "QueueSink", "Sink", "SinkBase"]
