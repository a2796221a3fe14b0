"""What an application's tests need to run mailproxy without a network: the memory store,
scripted adapters that record what they were given, and attachments held in memory (each
passes the contract suite of its port).

    from mailproxy.testing import MemoryStore, RecordingReportSender, ScriptedTransport
    from mailproxy.testing import MemoryAttachmentSource
"""

from __future__ import annotations

from mailproxy.adapters.capture import CaptureTransport
from mailproxy.adapters.memory import MemoryStore
from mailproxy.adapters.scripted import (
    CountingStore,
    MemoryAttachmentSource,
    RecordingReportSender,
    ReportCall,
    ScriptedTransport,
)

__all__ = [
    "CaptureTransport",
    "CountingStore",
    "MemoryAttachmentSource",
    "MemoryStore",
    "RecordingReportSender",
    "ReportCall",
    "ScriptedTransport",
]
