"""Trace events, the in-process store, trace files and the shared resource monitor.

This package imports neither ``engines`` nor ``textual``.
"""

from .events import (
    EVENT_TYPES, FORMAT_VERSION, Alt, AnyEvent, Backtrack, Capture, GpuSample, Message, Metric,
    NodeClose, NodeOpen, RunEnd, RunStart, Token, TokenKind, ProbKind, display_text, safe_text,
)
from .fileformat import (
    FrameDamage, TraceFile, TraceFormatError, TraceWriteError, TraceWriter, decode_trace, encode_trace, read_trace,
    write_trace,
)
from .monitor import ResourceMonitor, get_monitor
from .store import State, TraceStore
from .tree import TraceNode, TraceTree

__all__ = [
    "EVENT_TYPES", "FORMAT_VERSION", "Alt", "AnyEvent", "Backtrack", "Capture", "GpuSample", "Message",
    "Metric", "NodeClose", "NodeOpen", "RunEnd", "RunStart", "Token", "TokenKind", "ProbKind", "display_text",
    "safe_text", "FrameDamage", "TraceFile", "TraceFormatError", "TraceWriteError", "TraceWriter", "decode_trace",
    "encode_trace", "read_trace", "write_trace", "ResourceMonitor", "get_monitor", "State", "TraceStore",
    "TraceNode", "TraceTree",
]
