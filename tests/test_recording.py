"""Every process that uses engines records its runs (engines/recording.py).

Plain ``python`` subprocesses, each with its own runs directory.  The quick tests use a model-free
byte-level engine (``_fake_engine``); the ``model`` ones run the embedded Gemma, and the IPython
ones a real Jupyter kernel.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tracing import Message, RunEnd, RunStart, Token, TokenKind, TraceStore, read_trace
from tracing import runs

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
FAKE = f"import sys; sys.path.insert(0, {str(TESTS)!r})\nfrom _fake_engine import fake_model\n"


def env_for(rdir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (runs.RECORD_ENV, "JPY_SESSION_NAME")}
    env.update({runs.RUNS_ENV: str(rdir), "PYTHONPATH": str(ROOT)}, **extra)
    return env


def python(tmp_path: Path, body: str, *, fake: bool = True, env: dict | None = None, args: tuple = (),
           name: str = "prog.py", timeout: float = 300) -> tuple[subprocess.CompletedProcess, Path, Path]:
    """Run ``body`` as a script with plain python; returns the process, the runs directory and the script."""
    rdir = tmp_path / "runs"
    script = tmp_path / name
    script.write_text((FAKE if fake else "") + textwrap.dedent(body))
    proc = subprocess.run([sys.executable, str(script), *args], cwd=tmp_path, env=env or env_for(rdir),
                          capture_output=True, text=True, timeout=timeout)
    return proc, rdir, script


def traces(rdir: Path) -> list[Path]:
    return sorted(rdir.glob("*.gtt")) if rdir.exists() else []


def load(path: Path) -> TraceStore:
    return TraceStore(read_trace(path).events)


def only_run(rdir: Path) -> tuple[Path, TraceStore]:
    found = traces(rdir)
    assert len(found) == 1, found
    return found[0], load(found[0])


def generated(store: TraceStore) -> int:
    return sum(1 for s in store.seqs_of(Token) if store[s].kind == TokenKind.GENERATED)


def no_live_entries(rdir: Path) -> bool:
    live = rdir / ".live"
    return not live.exists() or not [n for n in os.listdir(live) if n.endswith(".json")]


# -- plain python, model-free ---------------------------------------------------------------
def test_importing_engines_records_nothing_and_hooks_nothing(tmp_path):
    proc, rdir, _ = python(tmp_path, """
        import atexit, sys, threading
        import engines
        from engines import session
        session.current()  # the default session exists; no event yet
        print(sys.excepthook is sys.__excepthook__, threading.excepthook is threading.__excepthook__)
    """, fake=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "True"]
    assert not rdir.exists() or not os.listdir(rdir)


def test_a_plain_script_records_one_run(tmp_path):
    proc, rdir, script = python(tmp_path, """
        from engines import gen
        lm = fake_model() + "Q: hi? A:" + gen("a", max_tokens=5)
        print(str(lm))
    """, args=("--flag", "x"))
    assert proc.returncode == 0, proc.stderr
    path, store = only_run(rdir)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    start, end = store.run_start(), store.run_end()
    assert start.script == str(script.resolve())
    assert start.argv == [str(script), "--flag", "x"]
    assert (start.model, start.backend) == ("fake-bytes", "fake")
    assert start.info["cwd"] == str(tmp_path) and start.info["pid"].isdigit()
    assert (end.status, end.generated_tokens) == ("done", 5)
    assert store.text_at(store.last_seq) == proc.stdout.strip()
    assert store.seqs_of(RunStart) == [0] and store.seqs_of(RunEnd) == [store.last_seq]
    summary = json.loads((rdir / ".index" / (path.name + ".json")).read_text())
    assert (summary["status"], summary["generated"], summary["script"]) == ("done", 5, str(script.resolve()))
    assert no_live_entries(rdir)


def test_the_registry_lists_the_run_while_it_records(tmp_path):
    proc, rdir, script = python(tmp_path, """
        import json
        from engines import gen
        from tracing import runs
        lm = fake_model() + "x" + gen(max_tokens=2)
        print(json.dumps([[r.trace, r.script, r.model, r.pid] for r in runs.live_runs()]))
    """)
    assert proc.returncode == 0, proc.stderr
    path, _ = only_run(rdir)
    (entry,) = json.loads(proc.stdout)
    assert entry[:3] == [str(path.resolve()), str(script.resolve()), "fake-bytes"]
    assert no_live_entries(rdir)  # gone once the process ended


def test_an_uncaught_exception_ends_the_run_with_error(tmp_path):
    proc, rdir, script = python(tmp_path, """
        from engines import gen
        lm = fake_model() + "x" + gen(max_tokens=3)
        def fail():
            raise ValueError("boom\\nsecond line")
        fail()
    """)
    assert proc.returncode == 1
    assert "ValueError: boom" in proc.stderr  # the previous hook still prints the traceback
    _, store = only_run(rdir)
    end = store.run_end()
    assert (end.status, end.error) == ("error", "ValueError: boom second line")
    assert str(script) in end.traceback and "fail" in end.traceback
    assert generated(store) == 3
    assert no_live_entries(rdir)


def test_keyboard_interrupt_ends_the_run_interrupted(tmp_path):
    proc, rdir, _ = python(tmp_path, """
        from engines import gen
        lm = fake_model() + "x" + gen(max_tokens=3)
        raise KeyboardInterrupt
    """)
    assert proc.returncode != 0
    _, store = only_run(rdir)
    assert store.run_end().status == "interrupted"


def test_an_uncaught_exception_in_a_thread_is_recorded(tmp_path):
    proc, rdir, _ = python(tmp_path, """
        import threading
        from engines import gen
        lm = fake_model() + "x" + gen(max_tokens=3)
        def work():
            raise RuntimeError("worker failed")
        t = threading.Thread(target=work, name="worker")
        t.start(); t.join()
        print("main goes on")
    """)
    assert proc.returncode == 0 and "main goes on" in proc.stdout
    _, store = only_run(rdir)
    end = store.run_end()
    assert (end.status, end.error) == ("error", "in thread worker: RuntimeError: worker failed")
    assert any(store[s].level == "error" and "worker failed" in store[s].text for s in store.seqs_of(Message))


def test_recording_off_writes_no_file_and_the_store_still_works(tmp_path):
    proc, rdir, _ = python(tmp_path, """
        from engines import gen, session
        lm = fake_model() + "x" + gen(max_tokens=3)
        print(session.current().store.state_at(10**9).generated)
    """, env=env_for(tmp_path / "runs", GUIDANCE_TUI_RECORD="0"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "3"
    assert traces(rdir) == []


def test_an_unusable_runs_directory_warns_once_and_the_program_goes_on(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    proc, _, _ = python(tmp_path, """
        from engines import gen
        lm = fake_model() + "x" + gen(max_tokens=2)
        lm = lm + "y" + gen(max_tokens=2)
        print(str(lm))
    """, env=env_for(blocker))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "xaayaa"
    assert proc.stderr.count("not recording this process's runs") == 1
    assert "not a directory" in proc.stderr


def test_python_dash_c_is_named_so(tmp_path):
    rdir = tmp_path / "runs"
    code = FAKE + "from engines import gen\nlm = fake_model() + 'x' + gen(max_tokens=2)\n"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env_for(rdir), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    path, store = only_run(rdir)
    assert store.run_start().script == "python -c" and path.name.endswith("-python_-c.gtt")
    assert store.run_end().status == "done"


def test_record_names_the_file_and_the_runs_around_it_stay_separate(tmp_path):
    proc, rdir, _ = python(tmp_path, """
        import engines
        from engines import gen
        lm = fake_model() + "Q:" + gen(max_tokens=2)           # the automatic run
        with engines.record("out/named.gtt") as rec:         # ends it, records here
            assert rec.active
            lm2 = lm + " more" + gen(max_tokens=3)          # continues a model of the earlier run
        assert not rec.active
        print(str(lm2))
        rec2 = engines.record("second.gtt")
        lm3 = lm2 + "!"
        rec2.close()
        lm4 = lm3 + " again" + gen(max_tokens=1)            # a new automatic run
    """)
    assert proc.returncode == 0, proc.stderr
    named = tmp_path / "out" / "named.gtt"
    assert stat.S_IMODE(os.stat(named).st_mode) == 0o600
    store = load(named)
    assert store.run_end().status == "done"
    assert store.text_at(store.last_seq) == proc.stdout.strip()  # the earlier text is repeated first
    assert generated(store) == 3
    second = load(tmp_path / "second.gtt")
    assert second.text_at(second.last_seq) == proc.stdout.strip() + "!"
    auto = traces(rdir)
    assert len(auto) == 2  # before and after the named ones
    assert [load(p).run_end().status for p in auto] == ["done", "done"]
    assert not (tmp_path / "out" / ".index").exists()  # no summaries outside the runs directory
    assert no_live_entries(rdir)


def test_an_exception_leaving_a_record_block_is_its_status(tmp_path):
    proc, rdir, _ = python(tmp_path, """
        import engines
        from engines import gen
        try:
            with engines.record("x.gtt"):
                lm = fake_model() + "x" + gen(max_tokens=2)
                raise LookupError("inside")
        except LookupError:
            pass
    """)
    assert proc.returncode == 0, proc.stderr
    end = load(tmp_path / "x.gtt").run_end()
    assert (end.status, end.error) == ("error", "LookupError: inside")
    assert traces(rdir) == []  # nothing happened outside the block


def test_a_forked_child_records_its_own_run(tmp_path):
    proc, rdir, _ = python(tmp_path, """
        import os
        from engines import gen
        lm = fake_model() + "parent" + gen(max_tokens=2)
        pid = os.fork()
        if pid == 0:
            lm2 = lm + " child" + gen(max_tokens=1)
            raise SystemExit(0)
        os.waitpid(pid, 0)
        lm3 = lm + " parent again" + gen(max_tokens=1)
    """)
    assert proc.returncode == 0, proc.stderr
    stores = [load(p) for p in traces(rdir)]
    assert len(stores) == 2
    texts = sorted(s.text_at(s.last_seq) for s in stores)
    assert texts == ["parentaa child" + "a", "parentaa parent again" + "a"]
    assert all(s.run_end().status == "done" and len(s.seqs_of(RunStart)) == 1 for s in stores)


def test_under_the_runner_there_is_one_trace(tmp_path):
    rdir = tmp_path / "runs"
    script = tmp_path / "prog.py"
    script.write_text(FAKE + textwrap.dedent("""
        import engines
        from engines import gen
        lm = fake_model() + "x" + gen(max_tokens=2)
        rec = engines.record("ignored.gtt")
        lm = lm + gen(max_tokens=1)
    """))
    proc = subprocess.run([sys.executable, "-m", "guidance_tui", "record", str(script), "-q", "-o",
                           str(tmp_path / "t.gtt")], cwd=tmp_path, env=env_for(rdir), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "ignored.gtt").exists()
    assert traces(rdir) == []
    store = load(tmp_path / "t.gtt")
    assert len(store.seqs_of(RunStart)) == 1 and store.run_end().status == "done"
    assert generated(store) == 3
    assert any("ignored" in store[s].text for s in store.seqs_of(Message))


# -- IPython / Jupyter: a real kernel --------------------------------------------------------
class Kernel:
    """A Jupyter kernel on this interpreter (no installed kernelspec needed)."""

    def __init__(self, env: dict[str, str], spec_dir: Path) -> None:
        from jupyter_client.kernelspec import KernelSpecManager
        from jupyter_client.manager import KernelManager

        # A kernelspec of our own, so the kernel is this interpreter whatever the user has installed.
        kdir = spec_dir / "kernels" / "gtui-test"
        kdir.mkdir(parents=True, exist_ok=True)
        (kdir / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "guidance-tui test", "language": "python"}))
        ksm = KernelSpecManager(kernel_dirs=[str(spec_dir / "kernels")], ensure_native_kernel=False)
        self.km = KernelManager(kernel_name="gtui-test", kernel_spec_manager=ksm)
        self.km.start_kernel(env=env)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)

    def run(self, code: str, timeout: float = 300) -> dict:
        """Execute one cell; returns its execution count, stdout and error name."""
        msg_id = self.kc.execute(code)
        out: dict = {"stdout": "", "error": None}
        deadline = time.monotonic() + timeout
        while True:
            msg = self.kc.get_iopub_msg(timeout=max(1.0, deadline - time.monotonic()))
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out["stdout"] += content["text"]
            elif kind == "error":
                out["error"] = content["ename"]
            elif kind == "status" and content["execution_state"] == "idle":
                break
        reply = self.kc.get_shell_msg(timeout=60)
        out["count"] = reply["content"]["execution_count"]
        return out

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=False)


@pytest.fixture()
def kernel_env(tmp_path):
    pytest.importorskip("ipykernel")
    pytest.importorskip("jupyter_client")
    rdir = tmp_path / "runs"
    return rdir, env_for(rdir, JPY_SESSION_NAME=str(tmp_path / "analysis.ipynb")), tmp_path / "jupyter"


def cell_runs(rdir: Path) -> list[TraceStore]:
    stores = [load(p) for p in traces(rdir)]
    return sorted(stores, key=lambda s: int(s.run_start().info["cell"]))


def test_each_notebook_cell_that_uses_engines_is_one_run(kernel_env):
    rdir, env, spec_dir = kernel_env
    k = Kernel(env, spec_dir)
    try:
        setup = k.run(FAKE + "from engines import gen\nprint(sys.executable)")
        assert setup["stdout"].strip() == sys.executable
        c1 = k.run("lm = fake_model() + 'Q: 2+2? A:' + gen('a', max_tokens=5)\nprint(lm)")
        k.run("x = 1 + 1")  # no engines: no run
        c2 = k.run("lm2 = lm + ' and' + gen('b', max_tokens=2)\nprint(lm2)")  # a model of the earlier cell
        c3 = k.run("lm3 = lm + gen(max_tokens=1)\nraise ValueError('bad cell')")
        assert setup["error"] is None and c1["error"] is None and c2["error"] is None, (setup, c1, c2)
        assert c3["error"] == "ValueError"
        live_during = [r.script for r in runs.live_runs(rdir)]
    finally:
        k.close()
    assert live_during == []  # each cell's run ended with the cell
    stores = cell_runs(rdir)
    assert [s.run_start().script for s in stores] == [f"analysis.ipynb · In [{c['count']}]" for c in (c1, c2, c3)]
    for s, c in zip(stores, (c1, c2)):
        assert s.run_end().status == "done"
        assert s.text_at(s.last_seq) == c["stdout"].strip()
    assert stores[0].run_start().info["source"].startswith("lm = fake_model()")
    assert stores[0].run_start().info["notebook"].endswith("analysis.ipynb")
    assert (stores[2].run_end().status, stores[2].run_end().error) == ("error", "ValueError: bad cell")
    assert no_live_entries(rdir)


# -- the real model ----------------------------------------------------------------------------
REAL = """
    from engines import gen, models
    lm = models.default() + "Q: 2+2? A:" + gen("a", max_tokens=5)
"""


@pytest.mark.model
def test_model_a_plain_python_script_records_its_run(tmp_path):
    proc, rdir, script = python(tmp_path, REAL + """
    import json, os
    from tracing import runs
    (live,) = runs.live_runs()
    print(json.dumps([live.trace, live.model, oct(os.stat(live.trace).st_mode & 0o777)]))
    """, fake=False)
    assert proc.returncode == 0, proc.stderr
    path, store = only_run(rdir)
    trace, model, mode = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (trace, mode) == (str(path.resolve()), "0o600")
    assert model.endswith(".gguf")
    start, end = store.run_start(), store.run_end()
    assert start.script == str(script.resolve()) and start.backend == "llamacpp" and start.model == model
    assert end.status == "done" and end.generated_tokens >= 1
    assert generated(store) == end.generated_tokens
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert no_live_entries(rdir)


@pytest.mark.model
def test_model_a_script_that_raises_records_the_error(tmp_path):
    proc, rdir, _ = python(tmp_path, REAL + """
    raise RuntimeError(f"answer was {lm['a']!r}")
    """, fake=False)
    assert proc.returncode == 1
    _, store = only_run(rdir)
    end = store.run_end()
    assert end.status == "error" and end.error.startswith("RuntimeError: answer was")
    assert generated(store) >= 1


@pytest.mark.model
def test_model_recording_off_and_record_path(tmp_path):
    env = env_for(tmp_path / "runs", GUIDANCE_TUI_RECORD="0")
    proc, rdir, _ = python(tmp_path, REAL + """
    import engines
    with engines.record("named.gtt"):
        lm2 = lm + " Again:" + gen("b", max_tokens=3)
    """, fake=False, env=env)
    assert proc.returncode == 0, proc.stderr
    assert traces(rdir) == []  # off: no automatic run...
    store = load(tmp_path / "named.gtt")  # ...but the named file is written
    assert stat.S_IMODE(os.stat(tmp_path / "named.gtt").st_mode) == 0o600
    assert store.run_end().status == "done" and generated(store) >= 1
    assert store.text_at(store.last_seq).startswith("Q: 2+2? A:")  # the earlier text, repeated


@pytest.mark.model
def test_model_under_guidance_tui_record_there_is_one_trace(tmp_path):
    rdir = tmp_path / "runs"
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent(REAL))
    proc = subprocess.run([sys.executable, "-m", "guidance_tui", "record", str(script), "-q"], cwd=tmp_path,
                          env=env_for(rdir), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    path, store = only_run(rdir)  # the runner's own trace, and nothing else
    assert len(store.seqs_of(RunStart)) == 1 and store.run_end().status == "done"
    assert generated(store) >= 1


@pytest.mark.model
def test_model_notebook_cells_on_the_real_model(kernel_env):
    rdir, env, spec_dir = kernel_env
    k = Kernel(env, spec_dir)
    try:
        cells = [k.run('from engines import models, gen\n'
                       'lm = models.default() + "Q: 2+2? A:" + gen("a", max_tokens=5)\nprint(lm)'),
                 k.run("y = [i * i for i in range(3)]"),
                 k.run('lm = models.default() + "Q: 3+3? A:" + gen("a", max_tokens=5)\nprint(lm)')]
    finally:
        k.close()
    assert [c["error"] for c in cells] == [None, None, None]
    stores = cell_runs(rdir)
    assert len(stores) == 2
    for s, c in zip(stores, (cells[0], cells[2])):
        start, end = s.run_start(), s.run_end()
        assert start.script == f"analysis.ipynb · In [{c['count']}]"
        assert "gen(\"a\", max_tokens=5)" in start.info["source"]
        assert start.model.endswith(".gguf")
        assert end.status == "done" and generated(s) >= 1
        assert s.text_at(s.last_seq) == c["stdout"].strip()
    assert no_live_entries(rdir)
