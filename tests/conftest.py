"""Fixtures shared by the engine tests."""

from __future__ import annotations

import pytest


@pytest.fixture()
def session():
    """A fresh recording session (its own store, no monitor) active for one test."""
    from engines.session import Session, activate

    s = Session(monitoring=False)
    activate(s)
    yield s
    activate(None)
    s.close()
