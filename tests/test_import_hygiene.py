"""The headless parts never load the UI framework or the engines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def loaded_after(code: str, tmp_path: Path) -> set[str]:
    """Top-level package names in sys.modules after running ``code`` in a fresh interpreter."""
    script = textwrap.dedent(code) + textwrap.dedent("""
        import json, sys
        print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TRACE_DIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_tracing_reads_and_writes_without_engines_or_textual(tmp_path):
    mods = loaded_after("""
        import os
        import tracing
        from tracing.synthetic import synthetic_events
        path = os.path.join(os.environ["TRACE_DIR"], "t.gtt")
        store = tracing.TraceStore(synthetic_events(200))
        with tracing.TraceWriter(path, store):
            pass
        replay = tracing.TraceStore(tracing.read_trace(path).events)
        replay.state_at(replay.last_seq)
        replay.tree().render()
        mon = tracing.ResourceMonitor(hz=50)
        mon.sample_once(type("NoGpu", (), {"available": False})())
    """, tmp_path)
    assert "tracing" in mods
    assert "engines" not in mods
    assert "textual" not in mods


def test_cmd_inspect_loads_no_textual(tmp_path):
    mods = loaded_after("""
        import os, io, contextlib
        import tracing
        from tracing.synthetic import synthetic_events
        import guidance_tui.cli.inspect_commands
        from guidance_tui.cli import main
        path = os.path.join(os.environ["TRACE_DIR"], "t.gtt")
        tracing.write_trace(path, tracing.TraceStore(synthetic_events(50)).events())
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["info", path]) == 0
            assert main(["export", path, "-o", path + ".jsonl"]) == 0
    """, tmp_path)
    assert "guidance_tui" in mods
    assert "textual" not in mods
    assert "engines" not in mods
