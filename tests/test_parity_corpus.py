"""guidance-style programs run unchanged under guidance-tui's runner, which serves ``import guidance``
from engines when the real guidance is not installed (tests/guidance_corpus/).

All programs run in this one process, one after the other, sharing the loaded model (engines keep
backends per process).  Each program's ``# expect: NAME=REGEX`` lines name the captures its trace
must hold.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

from guidance_tui.run.runner import ScriptRun
from tracing import Capture, Message

pytestmark = pytest.mark.model

CORPUS = Path(__file__).parent / "guidance_corpus"
PROGRAMS = sorted(CORPUS.glob("*.py"))


def expectations(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r"# expect: (\w+)=(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


@pytest.fixture(scope="module")
def gguf() -> str:
    from engines.default_model import default_model_path

    return str(default_model_path(progress=False))


@pytest.fixture(scope="module", autouse=True)
def no_real_guidance():
    if importlib.util.find_spec("guidance") is not None:
        pytest.skip("the real guidance is installed in this interpreter: the runner leaves it in charge")


def test_the_corpus_has_at_least_fifteen_programs_each_with_expectations():
    assert len(PROGRAMS) >= 15
    for p in PROGRAMS:
        assert expectations(p), f"{p.name} names no expected capture"
        assert re.search(r"^(import guidance|from guidance import)", p.read_text(), re.M), p.name


@pytest.mark.parametrize("program", PROGRAMS, ids=[p.stem for p in PROGRAMS])
def test_program_runs_unchanged_and_records_its_captures(program: Path, gguf: str, tmp_path):
    run = ScriptRun(str(program), [gguf], record=tmp_path / "run.gtt", monitoring=False)
    result = run.run()
    assert result.status == "done", f"{result.error}\n{result.traceback}"
    events = run.store.events()
    notices = [e.text for e in events if isinstance(e, Message) and e.text.startswith("guidance: using")]
    assert notices == ["guidance: using guidance-tui's engines (guidance is not installed here)"]
    captured: dict[str, list[str]] = {}
    for e in events:
        if isinstance(e, Capture):
            captured.setdefault(e.name, []).append(e.value)
    for name, pattern in expectations(program).items():
        assert name in captured, f"{program.name}: no capture {name!r} (got {sorted(captured)})"
        assert any(re.fullmatch(pattern, v) for v in captured[name]), \
            f"{program.name}: {name}={captured[name]!r} does not match {pattern!r}"
    # The shim lives only while the script runs: this process has no guidance module afterwards.
    assert "guidance" not in sys.modules
