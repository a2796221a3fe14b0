"""The view that receives mailproxy's delivery reports (the tenant's
``client_base_url`` + ``client_sync_path``, ``/mail-proxy/sync`` by default)."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from mailproxy import webhooks
from mailproxy.contrib.django.signals import delivery_report as delivery_report_signal


@csrf_exempt
@require_POST
def delivery_report(request: HttpRequest) -> HttpResponse:
    """Verify the call with ``MAILPROXY_WEBHOOK_SECRET`` (a secret, or a list of them
    during a rotation), send :data:`~mailproxy.contrib.django.signals.delivery_report`
    per entry, and acknowledge. A bad signature or a stale call is answered 401 (the
    service sends the entries again later); a signal receiver that raises makes the
    answer 500, so the entries come again."""
    try:
        entries = webhooks.verify(request.headers, request.body, settings.MAILPROXY_WEBHOOK_SECRET)
    except webhooks.InvalidSignature as exc:
        return HttpResponse(str(exc), status=401, content_type="text/plain")
    except ValueError as exc:
        return HttpResponse(str(exc), status=400, content_type="text/plain")
    for entry in entries:
        delivery_report_signal.send(sender=delivery_report, entry=entry)
    return HttpResponse(webhooks.answer(queued=0), content_type="application/json")
