"""Errors of the remote backend: each one line, naming the server and what went wrong."""

from __future__ import annotations

from ..errors import EngineError, GrammarError


class RemoteError(EngineError):
    """The server could not be reached, refused the request, or sent something we cannot read."""


class GrammarViolation(EngineError):
    """The server produced a token the program's grammar does not allow (it ignored the grammar)."""


class UnsupportedGrammar(GrammarError):
    """The server's dialect cannot enforce a construct of the program (raised before any request)."""
