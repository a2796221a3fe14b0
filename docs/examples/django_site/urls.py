from django.dispatch import receiver
from django.urls import path

from mailproxy.contrib.django import signals, views


@receiver(signals.delivery_report)
def on_report(sender, entry, **kwargs):
    print(entry.event, entry.id, flush=True)


urlpatterns = [path("mail-proxy/sync", views.delivery_report)]
