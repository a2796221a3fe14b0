"""mailproxy: durable, rate-limited email delivery for applications.

Applications hand messages to mailproxy; it stores them durably, sends them over SMTP with
priorities and retries, and reports every outcome back. The library's front door is
:class:`mailproxy.service.MailProxy`; :func:`mailproxy.bootstrap.build_proxy` assembles one
from :class:`mailproxy.config.Settings`.
"""

__version__ = "0.1.0"
