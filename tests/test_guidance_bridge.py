"""The bridge for the real guidance: guidance 0.3.1 scripts run in their own interpreter
(``.venv-guidance``, made by ``scripts/guidance_venv.sh``) and are recorded through
``guidance_tui.bridge.BridgeRun``.

The real-model tests run the embedded Gemma through guidance's own llama.cpp engine; run this file
alone, never in parallel with other model tests (``flock /tmp/model.lock pytest ...``).
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tracing import Capture, Message, NodeClose, NodeOpen, RunEnd, RunStart, Token, TokenKind, read_trace

from guidance_tui import exit_codes
from guidance_tui.bridge import BridgeRun
from guidance_tui.bridge.convert import PROBS_OFF

pytestmark = [pytest.mark.model, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[1]

QA_SCRIPT = """
import sys
import time
from guidance import gen, guidance, models, select

echo = sys.argv[2] == "1"
lm = models.LlamaCpp(sys.argv[1], echo=echo, n_ctx=512, n_threads=2)

@guidance
def ask(lm, question):
    lm += question + select(["yes", "no"], name="inner")
    return lm

out = lm + "Q: Is water wet? A:" + select([" yes", " no"], name="ans") + gen("why", max_tokens=8)
print("ANS=" + repr(out["ans"]))
print("WHY=" + repr(out["why"]))
print("TEXT=" + repr(str(out)))
other = lm + ask("Q: Is fire cold? A: ")  # the same base model again: a branch
print("INNER=" + repr(other["inner"]))
print("OTHER=" + repr(str(other)))
time.sleep(1.5)  # guidance's monitor publishes every 0.5 s: a few samples for the metrics test
"""


@pytest.fixture(scope="module")
def guidance_python() -> str:
    """The guidance venv's interpreter (made once; quick when it is there already)."""
    try:
        done = subprocess.run(["bash", str(ROOT / "scripts" / "guidance_venv.sh")], capture_output=True, text=True,
                              timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"cannot create the guidance venv: {e}")
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        pytest.skip(f"cannot create the guidance venv (scripts/guidance_venv.sh exited {done.returncode}): {tail}")
    return str(ROOT / done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def gguf() -> str:
    from engines.default_model import default_model_path

    return str(default_model_path(progress=False))


def write(tmp_path: Path, name: str, source: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


def printed(store, key: str):
    """The value the script printed as ``KEY=<repr>``."""
    for ev in store.events():
        if isinstance(ev, Message) and ev.level == "stdout" and ev.text.startswith(key + "="):
            return eval(ev.text[len(key) + 1:])  # noqa: S307  (our own script's repr)
    raise AssertionError(f"the script printed no {key}=")


def of(events, kind):
    return [e for e in events if isinstance(e, kind)]


def node_text(store, name: str) -> str:
    """The model's text when the node named ``name`` closed."""
    node = next(e for e in store.events() if isinstance(e, NodeOpen) and e.name == name)
    close = next(e for e in store.events() if isinstance(e, NodeClose) and e.node_id == node.node_id)
    return store.text_at(close.seq)


@pytest.fixture(scope="module")
def qa_runs(guidance_python, gguf, tmp_path_factory):
    """The QA script run twice through the bridge: echo=False (as written) and echo=True."""
    tmp = tmp_path_factory.mktemp("bridge")
    script = write(tmp, "qa.py", QA_SCRIPT)
    runs = {}
    for echo in (False, True):
        run = BridgeRun(script, [gguf, "1" if echo else "0"], python=guidance_python, record=tmp / f"qa{int(echo)}.gtt")
        runs[echo] = (run, run.run())
    return runs


def test_a_guidance_program_is_recorded_with_its_prompt_and_generated_tokens(qa_runs):
    run, result = qa_runs[False]
    assert (result.status, result.exit_code) == ("done", 0), result
    store = run.store
    start, end = store.run_start(), store.run_end()
    assert start.backend == "guidance" and start.info["guidance"] == "0.3.1"
    assert end.status == "done" and end.error == ""
    tokens = of(store.events(), Token)
    kinds = {t.kind for t in tokens}
    assert TokenKind.PROMPT in kinds and TokenKind.GENERATED in kinds
    assert end.prompt_tokens == sum(t.kind == TokenKind.PROMPT for t in tokens) > 0
    assert end.generated_tokens == sum(t.kind == TokenKind.GENERATED for t in tokens) > 0
    # the text rebuilt from the events is guidance's own
    assert node_text(store, "why") == printed(store, "TEXT")


def test_the_trace_file_holds_the_same_run(qa_runs):
    run, _ = qa_runs[False]
    events = read_trace(run.trace_path).events
    ours = of(run.store.events(), Token)
    theirs = of(events, Token)
    assert [(t.bytes, t.kind, t.node_id) for t in theirs] == [(t.bytes, t.kind, t.node_id) for t in ours]
    assert isinstance(events[0], RunStart) and isinstance(events[-1], RunEnd) and events[-1].status == "done"
    assert len(events) == len(run.store)


def test_captures_hold_the_programs_values(qa_runs):
    run, _ = qa_runs[False]
    caps = {}
    for c in of(run.store.events(), Capture):
        caps[c.name] = c.value  # the last value of each capture
    assert caps["ans"] == printed(run.store, "ANS")
    assert caps["why"] == printed(run.store, "WHY")
    assert caps["inner"] == printed(run.store, "INNER")
    assert all(math.isnan(c.log_prob) for c in of(run.store.events(), Capture))  # guidance 0.3.1 gives none


def test_the_tree_has_the_program_function_and_the_branch(qa_runs):
    run, _ = qa_runs[False]
    opens = of(run.store.events(), NodeOpen)
    kinds = {(o.kind, o.name) for o in opens}
    assert ("select", "ans") in kinds and ("gen", "why") in kinds and ("program", "ask") in kinds
    program = next(o for o in opens if o.kind == "program")
    inner = next(o for o in opens if o.name == "inner")
    assert inner.parent_id == program.node_id
    assert program.base_id == 0  # the fresh base model, reused: a branch from the empty model
    assert "start:" in next(o for o in opens if o.name == "why").grammar
    assert node_text(run.store, "ask") == printed(run.store, "OTHER")
    assert "branch from" in run.store.tree().render()


def test_without_echo_only_the_probabilities_guidance_computes_are_there(qa_runs):
    run, _ = qa_runs[False]
    events = run.store.events()
    tokens = of(events, Token)
    ans = next(o.node_id for o in of(events, NodeOpen) if o.name == "ans")
    # no logits for the prompt, and none for a token sampled under the grammar's mask
    assert all(math.isnan(t.prob_raw) for t in tokens if t.kind == TokenKind.PROMPT or t.node_id == ans)
    assert all(t.top == [] for t in tokens if t.node_id == ans)
    # where the grammar accepts anything (gen's free text) guidance samples from the unmasked
    # distribution, so it has that token's probability even with echo=False
    why = next(o.node_id for o in of(events, NodeOpen) if o.name == "why")
    assert all(0.0 < t.prob_raw <= 1.0 for t in tokens if t.node_id == why and t.kind == TokenKind.GENERATED
               and t.bytes != b" yes")
    assert all(math.isnan(t.prob) for t in tokens if t.kind == TokenKind.GENERATED)  # after the mask: unknown
    assert PROBS_OFF in [m.text for m in of(events, Message)]


def test_what_guidance_never_gives_is_unknown_not_zero(qa_runs):
    for run, _ in qa_runs.values():
        for t in of(run.store.events(), Token):
            assert t.id == -1 and t.mask_us == -1
            if t.kind == TokenKind.GENERATED:
                assert t.allowed == -1 and math.isnan(t.prob)
                assert t.latency_us > 0


def test_with_echo_guidance_gives_probabilities_and_top_k_with_masked_flags(qa_runs):
    run, result = qa_runs[True]
    assert result.status == "done"
    generated = [t for t in of(run.store.events(), Token) if t.kind == TokenKind.GENERATED]
    assert generated and all(0.0 < t.prob_raw <= 1.0 for t in generated)
    assert all(t.top for t in generated)
    ans = next(t for t in generated if t.node_id == next(o.node_id for o in of(run.store.events(), NodeOpen)
                                                         if o.name == "ans"))
    assert any(a.masked for a in ans.top) and any(not a.masked for a in ans.top)  # select: the grammar masks
    assert PROBS_OFF not in [m.text for m in of(run.store.events(), Message)]
    # the same program, the same text, probabilities or not
    assert printed(run.store, "TEXT") == printed(qa_runs[False][0].store, "TEXT")


def test_metrics_come_from_guidances_monitor(qa_runs):
    from tracing import Metric

    run, _ = qa_runs[False]
    metrics = of(run.store.events(), Metric)
    assert metrics, "guidance samples every 0.5 s while its monitor runs"
    assert all(m.ram_used > 0 and m.ram_total >= m.ram_used for m in metrics)


def test_role_blocks_are_role_nodes_around_their_contents(guidance_python, gguf, tmp_path):
    script = write(tmp_path, "roles.py", """
        import sys
        from guidance import assistant, gen, models, user

        lm = models.LlamaCpp(sys.argv[1], echo=False, n_ctx=512, n_threads=2)
        with user():
            lm += "Say hi."
        with assistant():
            lm += gen("reply", max_tokens=5)
        print("TEXT=" + repr(str(lm)))
        print("REPLY=" + repr(lm["reply"]))
    """)
    run = BridgeRun(script, [gguf], python=guidance_python, record=tmp_path / "roles.gtt")
    assert run.run().status == "done"
    store = run.store
    assert store.tree().render().splitlines()[1:] == [
        "├── role user", "│   └── literal Say hi.", "└── role assistant", "    └── gen reply"]
    assert store.text_at(store.last_seq) == printed(store, "TEXT")
    assert [c.value for c in of(store.events(), Capture) if c.name == "reply"][-1] == printed(store, "REPLY")


def test_a_script_that_raises_ends_in_error_with_its_own_frames(guidance_python, tmp_path):
    script = write(tmp_path, "boom.py", """
        import guidance
        print("before the error")

        def helper():
            raise ValueError("the script's own error")

        helper()
    """)
    run = BridgeRun(script, python=guidance_python, record=tmp_path / "boom.gtt")
    result = run.run()
    assert result.status == "error" and result.exit_code == exit_codes.SCRIPT_RAISED
    assert result.error == "ValueError: the script's own error"
    assert "boom.py" in result.traceback and "helper" in result.traceback
    assert "_inject.py" not in result.traceback and "runpy" not in result.traceback
    end = read_trace(run.trace_path).events[-1]
    assert isinstance(end, RunEnd) and end.status == "error" and end.error == result.error
    assert end.traceback == result.traceback
    assert [m.text for m in of(run.store.events(), Message) if m.level == "stdout"] == ["before the error"]


def test_sys_exit_keeps_the_scripts_exit_code(guidance_python, tmp_path):
    script = write(tmp_path, "exit5.py", "import sys\nsys.exit(5)\n")
    result = BridgeRun(script, python=guidance_python, record=tmp_path / "exit5.gtt").run()
    assert (result.status, result.exit_code) == ("error", 5)


def test_cancel_interrupts_a_generating_script_and_keeps_the_trace(guidance_python, gguf, tmp_path):
    script = write(tmp_path, "forever.py", """
        import sys
        from guidance import gen, models

        lm = models.LlamaCpp(sys.argv[1], echo=False, n_ctx=2048, n_threads=2) + "Count: 1, 2, 3,"
        while True:
            lm += gen(max_tokens=16)
    """)
    run = BridgeRun(script, [gguf], python=guidance_python, record=tmp_path / "forever.gtt")
    box = {}
    worker = threading.Thread(target=lambda: box.setdefault("result", run.run()), daemon=True)
    worker.start()
    deadline = time.monotonic() + 300
    while sum(1 for t in of(run.store.events(), Token) if t.kind == TokenKind.GENERATED) < 5:
        assert time.monotonic() < deadline and worker.is_alive(), "no generated tokens"
        time.sleep(0.1)
    run.cancel()
    worker.join(timeout=60)
    assert not worker.is_alive(), "cancel() did not stop the script"
    result = box["result"]
    assert result.status == "interrupted" and result.exit_code == exit_codes.INTERRUPTED
    events = read_trace(run.trace_path).events
    assert events[-1].status == "interrupted"
    assert sum(1 for t in of(events, Token) if t.kind == TokenKind.GENERATED) >= 5
    opened = {o.node_id for o in of(events, NodeOpen)}
    assert opened == {c.node_id for c in of(events, NodeClose)}  # every node closed


def test_headless_echo_prints_the_scripts_lines_as_well(guidance_python, tmp_path, capfd):
    script = write(tmp_path, "hello.py", "import sys\nprint('hello', sys.argv[1])\n")
    run = BridgeRun(script, ["there"], python=guidance_python, record=tmp_path / "hello.gtt", echo=True,
                    pipe_output=False)
    assert run.run().status == "done"
    assert "hello there" in capfd.readouterr().out
    assert [m.text for m in of(run.store.events(), Message) if m.level == "stdout"] == ["hello there"]


def test_an_interpreter_without_guidance_is_refused_before_anything_starts(tmp_path):
    from guidance_tui.run.script_process import StartError

    script = write(tmp_path, "s.py", "print(1)\n")
    run = BridgeRun(script, python=sys.executable, record=tmp_path / "s.gtt")  # our venv: no guidance
    with pytest.raises(StartError, match="no guidance installed"):
        run.start()
    missing = BridgeRun(script, python=str(tmp_path / "no-python"), record=tmp_path / "s.gtt")
    result = missing.run()
    assert result.status == "error" and "no such interpreter" in result.error
    assert not (tmp_path / "s.gtt").exists()


# -- the app over a BridgeRun (as `run --python` will use it) -----------------------------------------
def _app(run):
    from guidance_tui.app import InspectorApp

    return InspectorApp(run.store, script_run=run, use_monitor=False)


def test_the_app_follows_a_bridge_run_and_shows_its_error(guidance_python, tmp_path):
    import asyncio

    from _app_support import sync

    script = write(tmp_path, "s.py", """
        import guidance
        print("working")
        1 / 0
    """)
    run = BridgeRun(script, python=guidance_python, record=tmp_path / "t.gtt")
    app = _app(run)

    @sync
    async def drive():
        async with app.run_test(size=(100, 32)) as pilot:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while not (app.script_done.is_set() and app.query_one("#error").has_class("-shown")):
                assert loop.time() < deadline, "the error never showed"
                await pilot.pause(0.05)
            assert "ZeroDivisionError" in str(app.inspector.error_pane.body.render())
            assert app.inspector.metrics_bar.stats.status == "error"
            await pilot.press("q")

    drive()
    assert app.return_value == exit_codes.SCRIPT_RAISED


def test_quitting_the_app_interrupts_the_bridge_run(guidance_python, tmp_path):
    import asyncio

    from _app_support import sync

    script = write(tmp_path, "s.py", """
        import time
        import guidance
        print("started")
        time.sleep(600)
    """)
    run = BridgeRun(script, python=guidance_python, record=tmp_path / "t.gtt")
    app = _app(run)

    @sync
    async def drive():
        async with app.run_test(size=(100, 32)) as pilot:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while not any(isinstance(e, Message) and e.text == "started" for e in run.store.since(-1)):
                assert loop.time() < deadline
                await pilot.pause(0.05)
            await pilot.press("q")

    drive()
    assert app.script_done.wait(20)
    assert run.result.status == "interrupted" and run.proc.returncode == exit_codes.INTERRUPTED
    assert read_trace(run.trace_path).events[-1].status == "interrupted"


def test_the_command_line_records_a_real_guidance_script_with_python(guidance_python, gguf, tmp_path):
    """`guidance-tui record --python PY SCRIPT`: the user's own interpreter, the real guidance."""
    import subprocess

    from tracing import Capture, RunEnd, Token, read_trace

    script = write(tmp_path, "qa.py", QA_SCRIPT)
    out = tmp_path / "cli.gtt"
    proc = subprocess.run([sys.executable, "-m", "guidance_tui", "record", "-q", "--python", guidance_python,
                           str(script), "-o", str(out), "--", gguf, "0"],
                          capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == 0, proc.stderr
    events = read_trace(out).events
    assert any(isinstance(e, Token) for e in events)
    ans = next(e.value for e in events if isinstance(e, Capture) and e.name == "ans")
    assert f"ANS={ans!r}" in proc.stdout  # the program's own value
    assert isinstance(events[-1], RunEnd) and events[-1].status == "done"


def test_python_refuses_our_engine_options(guidance_python, tmp_path, capsys):
    from guidance_tui.cli import main

    script = write(tmp_path, "s.py", "print('never')\n")
    assert main(["record", "--python", guidance_python, str(script), "--model", "x.gguf"]) == 2
    assert "--python" in capsys.readouterr().err
