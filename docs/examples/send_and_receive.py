import os
from http.server import BaseHTTPRequestHandler, HTTPServer

from mailproxy import webhooks
from mailproxy.client import Client

mail = Client(os.environ["MAILPROXY_URL"], token=os.environ["MAILPROXY_TOKEN"])
mail.send({"id": "welcome-1", "from": "shop@example.com", "to": ["ada@example.org"],
           "subject": "Welcome", "body": "Hello Ada"})  # fmt: skip


class Reports(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        try:
            entries = webhooks.verify(self.headers, body, os.environ["MAILPROXY_WEBHOOK_SECRET"])
        except webhooks.InvalidSignature:
            return self.send_error(401)
        for entry in entries:
            print(entry.event, entry.id, flush=True)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(webhooks.answer())


HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Reports).serve_forever()
