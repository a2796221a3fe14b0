"""The tests' report receiver records only requests that arrived whole: a sender killed
mid-body (as the crash tests do to the service) delivered nothing."""

from __future__ import annotations

import json
import socket

import httpx

from tests.report_receiver import running_receiver


def test_a_request_cut_mid_body_is_not_recorded_and_a_whole_one_is():
    with running_receiver() as receiver:
        with socket.create_connection(("127.0.0.1", receiver.port)) as cut:
            cut.sendall(
                b"POST /sync HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b'Content-Length: 100\r\n\r\n{"delivery_report": ['
            )
        body = {"delivery_report": [{"event_id": "e1"}]}
        answer = httpx.post(f"{receiver.url}/sync", content=json.dumps(body), timeout=10)

        assert answer.status_code == 200
        assert receiver.event_ids() == ["e1"]
