import os

SECRET_KEY = "example-only"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "urls"

EMAIL_BACKEND = "mailproxy.contrib.django.EmailBackend"
MAILPROXY_URL = os.environ["MAILPROXY_URL"]
MAILPROXY_TOKEN = os.environ["MAILPROXY_TOKEN"]
MAILPROXY_WEBHOOK_SECRET = os.environ["MAILPROXY_WEBHOOK_SECRET"]
