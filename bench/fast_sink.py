"""A minimal SMTP sink for benchmarks (not a test, not a server to use): answers every
command with success and swallows message data, using ``bytes.find`` on whole reads, so
that it keeps up with large messages the way a production MTA does (aiosmtpd parses data
line by line in Python and falls behind on megabyte messages).

    python bench/fast_sink.py PORT [LATENCY_MS]

``LATENCY_MS`` delays every answer to the end of DATA, as a provider's queueing does
(a connection then carries at most 1000 / LATENCY_MS messages a second).
"""

from __future__ import annotations

import asyncio
import sys

LATENCY_S = 0.0


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"220 bench sink ESMTP\r\n")
    in_data = False
    pending = b""
    while chunk := await reader.read(1 << 20):
        pending += chunk
        while True:
            if in_data:
                end = pending.find(b"\r\n.\r\n")
                if end < 0:
                    pending = pending[-4:]  # keep what could start the end marker
                    break
                pending, in_data = pending[end + 5 :], False
                if LATENCY_S:
                    await writer.drain()
                    await asyncio.sleep(LATENCY_S)
                writer.write(b"250 2.0.0 accepted\r\n")
                continue
            line_end = pending.find(b"\r\n")
            if line_end < 0:
                break
            command, pending = pending[:4].upper(), pending[line_end + 2 :]
            if command in (b"EHLO", b"HELO"):
                writer.write(b"250-bench sink\r\n250 8BITMIME\r\n")
            elif command == b"DATA":
                writer.write(b"354 go ahead\r\n")
                in_data, pending = True, b"\r\n" + pending
            elif command == b"QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                writer.close()
                return
            else:
                writer.write(b"250 ok\r\n")
        await writer.drain()
    writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) > 2:
        LATENCY_S = float(sys.argv[2]) / 1000
    asyncio.run(main(int(sys.argv[1])))
