"""What an application's tests need to run mailproxy without a network: the memory store
and scripted adapters that record what they were given (each passes the contract suite of
its port).

    from mailproxy.testing import MemoryStore, RecordingReportSender, ScriptedTransport
"""

from __future__ import annotations

from mailproxy.adapters.capture import CaptureTransport
from mailproxy.adapters.memory import MemoryStore
from mailproxy.adapters.scripted import (
    CountingStore,
    RecordingReportSender,
    ReportCall,
    ScriptedTransport,
)

__all__ = [
    "CaptureTransport",
    "CountingStore",
    "MemoryStore",
    "RecordingReportSender",
    "ReportCall",
    "ScriptedTransport",
]
