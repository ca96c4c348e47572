"""The headless parts never load the UI framework or the engines."""

from __future__ import annotations

import importlib.util
import json
import os
import pkgutil
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


def modules_in(package: str) -> list[str]:
    """``package`` and every module below it, found in its folder without importing anything."""
    folder = ROOT.joinpath(*package.split("."))
    names = [package]
    for info in pkgutil.iter_modules([str(folder)]):
        if info.name == "__main__":
            continue  # importing it runs the program
        name = f"{package}.{info.name}"
        names.extend(modules_in(name) if info.ispkg else [name])
    return names


def import_each(names: list[str], forbidden: set[str]) -> str:
    """Code that imports ``names`` one by one and fails naming the first that loaded a ``forbidden`` package."""
    return f"""
        import importlib, sys
        for name in {names!r}:
            importlib.import_module(name)
            bad = {sorted(forbidden)!r}
            bad = [b for b in bad if b in sys.modules]
            assert not bad, f"importing {{name}} loaded {{bad}}"
    """


HEADLESS = [*modules_in("guidance_tui.state"), *modules_in("guidance_tui.bridge"), *modules_in("guidance_tui.run"), *modules_in("guidance_tui.cli"),
            "guidance_tui.exit_codes", "guidance_tui.gc_policy", "guidance_tui.paths"]


def test_the_module_walk_finds_the_known_modules():
    # Guards the walk itself: a walk that found nothing would pass every test below.
    for name in ("guidance_tui.state.token_index", "guidance_tui.state.loader", "guidance_tui.run.runner",
                 "guidance_tui.run.plain", "guidance_tui.cli.inspect_commands", "guidance_tui.cli.record_commands",
                 "guidance_tui.cli.app_commands"):
        assert name in HEADLESS
    assert {"engines.llamacpp", "engines.transformers_backend"} <= set(modules_in("engines"))
    assert {"tracing.fileformat", "tracing.store", "tracing.monitor"} <= set(modules_in("tracing"))


def test_headless_modules_never_load_textual(tmp_path):
    mods = loaded_after(import_each(HEADLESS, {"textual"}), tmp_path)
    assert "guidance_tui" in mods
    assert "textual" not in mods


def test_engines_never_load_guidance_tui(tmp_path):
    names = modules_in("engines")
    if not all(importlib.util.find_spec(dep) for dep in ("torch", "transformers")):
        names.remove("engines.transformers_backend")  # the optional extra is not installed
    mods = loaded_after(import_each(names, {"guidance_tui", "textual"}), tmp_path)
    assert "engines" in mods
    assert "guidance_tui" not in mods


def test_tracing_never_loads_engines_or_guidance_tui(tmp_path):
    mods = loaded_after(import_each(modules_in("tracing"), {"engines", "guidance_tui", "textual"}), tmp_path)
    assert "tracing" in mods
    assert not {"engines", "guidance_tui", "textual"} & mods
