"""The SMTP listener reads the usual MAIL and RCPT paths with a pattern, and every other
with aiosmtpd's parser: where the pattern answers, it answers as the parser does."""

from __future__ import annotations

import pytest
from aiosmtpd.smtp import SMTP

from mailproxy.entrypoints.smtp import simple_path

USUAL = [
    "<a@b.c>",
    "<a@b.c> SIZE=100",
    "<a.b+c@x-y.example.com>  BODY=8BITMIME",
    "<a@b.c>\tSIZE=1",
    "<a@b.c> ",
    "<a@b.c> SIZE=1 ",
    "<A!#$%&'*+/=?^_`{|}~-@B.C>",
    "<a@-b.c>",
]
OTHERS = [
    " <a@b.c>",
    "<a..b@c.d>",
    "<.a@b.c>",
    '<"q s"@b.c>',
    "<a@[127.0.0.1]>",
    "<>",
    "<a@b.c>x",
    "<jürgen@exämple.com>",
    "a@b.c",
    "<a@b.c",
    "<a@b..c>",
    "<@route:a@b.c>",
    "<a@b.c> (comment) SIZE=1",
    "<a@b.c>\r\n",
]


@pytest.fixture
async def parser() -> SMTP:
    return SMTP(handler=object(), hostname="mailproxy.test")


@pytest.mark.parametrize("arg", USUAL)
async def test_the_usual_paths_are_read_as_aiosmtpd_reads_them(parser, arg):
    assert simple_path(arg) == parser._getaddr(arg)


@pytest.mark.parametrize("arg", OTHERS)
async def test_every_other_path_is_left_to_aiosmtpd(arg):
    assert simple_path(arg) is None
