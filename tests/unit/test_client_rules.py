"""The client's retry rule and how refused answers become typed errors (mailproxy.client
.calls), on httpx's own Response objects."""

from __future__ import annotations

import httpx
import pytest

from mailproxy.client import (
    Conflict,
    InvalidRequest,
    NotFound,
    Rejected,
    ServerError,
    TooManyRequests,
)
from mailproxy.client.calls import (
    add_messages,
    error_of,
    health,
    retry_wait,
    should_retry,
    wait_before,
)


def answer(status: int, body: dict | None = None, **headers: str) -> httpx.Response:
    return httpx.Response(status, json=body if body is not None else {}, headers=headers)


def test_only_answers_that_a_repeat_may_change_are_retried():
    assert should_retry(None)  # no answer at all
    assert should_retry(answer(503))
    assert should_retry(answer(429))
    assert not should_retry(answer(422))
    assert not should_retry(answer(200))


def test_the_wait_follows_retry_after_or_doubles_up_to_a_bound():
    assert wait_before(1, answer(429, **{"Retry-After": "3"})) == 3.0
    assert wait_before(1, answer(503, **{"Retry-After": "3600"})) == 60.0
    assert [wait_before(n, None) for n in (1, 2, 3, 4, 5, 6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert wait_before(2, answer(503, **{"Retry-After": "soon"})) == 1.0


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (404, {"ok": False, "error": "message not found: m1"}, NotFound),
        (409, {"ok": False, "error": "in flight"}, Conflict),
        (422, {"ok": False, "error": "invalid port", "errors": [{"field": "port",
                                                                "message": "expected int"}]},
         InvalidRequest),
        (400, {"ok": False, "error": "nothing queued", "queued": 0,
               "rejected": [{"id": "m1", "reason": "missing to"}]}, Rejected),
        (429, {"ok": False, "error": "too many failed attempts"}, TooManyRequests),
        (503, {"ok": False, "error": "store unavailable"}, ServerError),
    ],
)  # fmt: skip
def test_a_refusal_is_the_error_of_its_kind(status, body, kind):
    error = error_of(answer(status, body, **{"Retry-After": "7"}))
    assert type(error) is kind
    assert (error.status, error.error) == (status, body["error"])
    if kind is InvalidRequest:
        assert [(e.field, e.message) for e in error.errors] == [("port", "expected int")]
    if kind is Rejected:
        assert [(r.id, r.reason) for r in error.rejected] == [("m1", "missing to")]
    if kind is TooManyRequests:
        assert error.retry_after_s == 7.0


def test_an_answer_that_is_not_json_still_says_its_status():
    error = error_of(httpx.Response(502, text="<html>bad gateway</html>"))
    assert isinstance(error, ServerError)
    assert error.status == 502


def test_a_send_still_being_handled_is_asked_again_a_read_conflict_is_not():
    send = add_messages([{"id": "m1"}], None, None, "key-1")
    assert retry_wait(send, 1, 4, answer(409)) == 0.5  # its stored answer comes later
    assert retry_wait(send, 5, 4, answer(409)) is None  # out of tries
    assert retry_wait(health(), 1, 4, answer(409)) is None
    assert retry_wait(send, 1, 4, answer(422)) is None
