"""A request of the wrong shape is answered in the words of the API, never in the names
of the code behind it: a missing or non-object body, a key without ``Bearer``, a message
posted without its ``messages`` wrapper, a query parameter the route does not take.
Through the real Litestar app over a real SQLite file."""

from __future__ import annotations

import pytest

from tests.unit.conftest import message
from tests.unit.test_http_answers import api  # noqa: F401  (the fixture)


async def problem_of(answer):
    assert answer.status_code == 422, answer.text
    return answer.json()["detail"]


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"", "missing body: a JSON object is expected"),
        (b"[]", "invalid request: the body must be a JSON object"),
        (b'"acme"', "invalid request: the body must be a JSON object"),
    ],
)
async def test_a_body_that_is_not_an_object_says_so(api, body, detail):  # noqa: F811
    answer = await api.admin("POST", "/tenant", content=body)
    text = await problem_of(answer)
    assert text == detail
    assert "data" not in answer.text


async def test_a_key_without_bearer_says_how_to_send_it(api):  # noqa: F811
    answer = await api.client.get("/messages", headers={"Authorization": api.tenant_key})
    assert answer.status_code == 401
    assert answer.json()["error"] == 'Authorization needs "Bearer <key>"'


async def test_a_bare_message_says_where_messages_go(api):  # noqa: F811
    answer = await api.tenant("POST", "/commands/add-messages", json=message("m1"))
    text = await problem_of(answer)
    assert text.startswith("invalid request: unknown field: ")
    assert text.endswith('(the messages go in "messages": [...])')


@pytest.mark.parametrize(
    ("path", "who"),
    [("/messages?stauts=error", "tenant"), ("/tenants?limt=1", "admin"),
     ("/messages/m1?x=1", "tenant"), ("/status?verbose=1", "admin")],
)  # fmt: skip
async def test_an_unknown_query_parameter_is_refused(api, path, who):  # noqa: F811
    name = path.split("?")[1].split("=")[0]
    call = api.tenant if who == "tenant" else api.admin
    answer = await call("GET", path)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"] == f"unknown query parameter: {name}"
