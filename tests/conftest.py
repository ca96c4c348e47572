"""Fixtures shared by the tests."""

from __future__ import annotations

import os
import tempfile

import pytest

# Tests never read or write the user's own settings and keymap (subprocesses inherit this too).
os.environ["GUIDANCE_TUI_CONFIG_DIR"] = tempfile.mkdtemp(prefix="guidance-tui-config-")
# ...nor fill the user's runs directory.
os.environ["GUIDANCE_TUI_RUNS"] = os.path.join(tempfile.mkdtemp(prefix="guidance-tui-runs-"), "runs")


@pytest.fixture()
def session():
    """A fresh recording session (its own store, no monitor) active for one test."""
    from engines.session import Session, activate

    s = Session(monitoring=False)
    activate(s)
    yield s
    activate(None)
    s.close()


@pytest.fixture(scope="module")
def lm0():
    """The embedded model in a session of its own, shared by one test module (no monitor)."""
    from engines import models
    from engines.session import Session, activate

    s = Session(monitoring=False)
    activate(s)
    yield models.LlamaCpp(monitoring=False)
    activate(None)
    s.close()
