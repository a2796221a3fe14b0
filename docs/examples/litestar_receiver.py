import os

from litestar import Litestar, Request, Response, post

from mailproxy import webhooks


@post("/mail-proxy/sync", status_code=200)
async def delivery_report(request: Request) -> Response[bytes]:
    try:
        entries = webhooks.verify(request.headers, await request.body(), os.environ["SECRET"])
    except webhooks.InvalidSignature:
        return Response(b"", status_code=401)
    for entry in entries:
        print(entry.event, entry.id, flush=True)
    return Response(webhooks.answer(), media_type="application/json")


app = Litestar([delivery_report])
