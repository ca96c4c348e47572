"""Helpers shared by the remote-engine tests: a session to record into, and its events."""

from __future__ import annotations

import contextlib

from engines import session as sessions
from engines.session import Session
from tracing import Message, Token, TokenKind


@contextlib.contextmanager
def recording():
    s = Session(monitoring=False)
    sessions.activate(s)
    try:
        yield s
    finally:
        sessions.activate(None)


def events(s: Session) -> list:
    return [s.store[i] for i in range(len(s.store))]


def generated(s: Session) -> list[Token]:
    return [e for e in events(s) if isinstance(e, Token) and e.kind != TokenKind.PROMPT]


def errors(s: Session) -> list[str]:
    return [e.text for e in events(s) if isinstance(e, Message) and e.level == "error"]
