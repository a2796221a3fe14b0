"""Django integration (the ``django`` extra): an email backend that hands Django's mail
to mailproxy, and a view that receives its delivery reports.

settings.py::

    EMAIL_BACKEND = "mailproxy.contrib.django.EmailBackend"
    MAILPROXY_URL = "http://127.0.0.1:8000"
    MAILPROXY_TOKEN = "<the tenant's API key>"
    MAILPROXY_TENANT = None        # with the admin token: the tenant to send as
    MAILPROXY_ACCOUNT = None       # an account other than the tenant's default
    MAILPROXY_WEBHOOK_SECRET = "<the tenant's webhook secret>"

urls.py::

    from mailproxy.contrib.django.views import delivery_report
    urlpatterns = [path("mail-proxy/sync", delivery_report)]

and a receiver of :data:`mailproxy.contrib.django.signals.delivery_report`, sent once per
report entry.
"""

from __future__ import annotations

from mailproxy.contrib.django.backend import EmailBackend

__all__ = ["EmailBackend"]
