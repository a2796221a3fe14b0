"""Serve the site's report view on $PORT and send two messages through mailproxy: one
with send_mail, one with text and HTML alternatives, an attachment and an inline image."""

import os
import threading
from wsgiref.simple_server import make_server

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
django.setup()

from email.mime.image import MIMEImage  # noqa: E402

from django.core.mail import EmailMultiAlternatives, send_mail  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402

server = make_server("127.0.0.1", int(os.environ["PORT"]), get_wsgi_application())
threading.Thread(target=server.serve_forever, daemon=True).start()

send_mail("Plain", "Hello Ada", "shop@example.com", ["ada@example.org"])
rich = EmailMultiAlternatives(
    "Rich", "The text part", "shop@example.com", ["bob@example.org"],
    cc=["carol@example.org"], reply_to=["help@example.com"],
)  # fmt: skip
rich.attach_alternative('<p>The <b>HTML</b> part <img src="cid:logo@shop"></p>', "text/html")
rich.attach("invoice.pdf", b"%PDF-1.4 example", "application/pdf")
logo = MIMEImage(b"\x89PNG\r\n\x1a\n example", "png")
logo.add_header("Content-ID", "<logo@shop>")
logo.add_header("Content-Disposition", "inline", filename="logo.png")
rich.attach(logo)
rich.metadata = {"order": 7}
rich.send()
print("queued", flush=True)
threading.Event().wait()  # go on serving reports until stopped
