"""The signal a verified delivery report sends, once per entry."""

from __future__ import annotations

from django.dispatch import Signal

#: Sent with ``entry`` (a :class:`mailproxy.webhooks.Entry`: ``event``, ``id``,
#: ``event_id``, ``metadata``, ...). Receivers should be idempotent on
#: ``entry.event_id``: an unacknowledged call is sent again with the same entries.
delivery_report = Signal()
