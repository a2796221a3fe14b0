"""Raw TCP peers on 127.0.0.1 that say a few lines and nothing more: a server over its
connection limit, a service that is not SMTP, a greeting that never ends."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator


@contextlib.contextmanager
def line_server(lines: list[bytes], *, pause_s: float = 0.0, hold_s: float = 0.0) -> Iterator[int]:
    """A listener on 127.0.0.1 (its port is yielded) that writes ``lines``, ``pause_s``
    apart, to every connection, keeps it open ``hold_s`` more, then hangs up."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection, contextlib.suppress(OSError):
                for line in lines:
                    if stop.is_set():
                        break
                    connection.sendall(line)
                    time.sleep(pause_s)
                stop.wait(hold_s)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()
