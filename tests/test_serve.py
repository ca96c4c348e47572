"""`guidance-tui serve`: the app in a browser through textual-serve, checked in a real headless Chromium.

The browser test needs the Debian `chromium` package (`scripts/install_browser.sh`, which CI runs) and
Playwright's Python package (never `playwright install`: the system Chromium is launched).  It is
skipped only when no Chromium can be found.  xterm.js draws on a canvas, so the test reads what the app
sent (the websocket frames: the terminal output, text and escapes) and compares the screenshots'
pixels before and after a key.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from guidance_tui.cli import main
from guidance_tui.export import serve

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
CLASSIFIER = DATA / "reach_classifier.gtt"  # recorded: guidance_tui/examples/classifier.py on the embedded Gemma
ANSI = re.compile(r"\x1b(?:\[[0-9;?<>=]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[()][0-9A-Za-z]|[=>78cDEHM])")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- where it listens --------------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.1.2.3", "::1", "[::1]"])
def test_loopback_hosts_need_nothing(host):
    assert serve.is_loopback(host)
    assert serve.check_host(host, public=False) == host


def test_default_host_is_loopback_and_public_alone_means_every_interface():
    assert serve.check_host(None, public=False) == "127.0.0.1"
    assert serve.check_host(None, public=True) == "0.0.0.0"
    assert serve.check_host("10.1.2.3", public=True) == "10.1.2.3"


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "example.org", "192.168.0.1"])
def test_a_host_that_is_not_loopback_needs_public(host, capsys):
    assert main(["serve", str(CLASSIFIER), "--host", host]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"guidance-tui: --host {host} is not a loopback address") and "--public" in err


@pytest.mark.parametrize("target, message", [
    ("missing.gtt", "missing.gtt: no such file"),
    ("notes.txt", "neither a trace file nor a Python script"),
    (".", "is a directory"),
])
def test_what_to_serve_must_exist(tmp_path, monkeypatch, target, message, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    assert main(["serve", target]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_port_in_use_is_one_line(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        assert main(["serve", str(CLASSIFIER), "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert err == f"guidance-tui: cannot listen on 127.0.0.1:{port}: Address already in use\n"


def test_the_command_each_tab_runs(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text("print(1)\n")
    t = serve.resolve_target(str(script))
    assert t.argv == ["run", str(script.resolve())]
    assert serve.app_command(t, ["--model", "/m x.gguf"]).split(" ", 1) == [
        sys.executable, f"-m guidance_tui.export.served run {script.resolve()} --model '/m x.gguf'"]
    assert serve.resolve_target(str(CLASSIFIER)).argv == ["replay", str(CLASSIFIER.resolve())]
    assert serve.resolve_target(None).argv == ["runs"]


# -- a real server --------------------------------------------------------------------------------------
class Served:
    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen([sys.executable, "-m", "guidance_tui", "serve", *argv], cwd=ROOT,
                                     stdout=open(log, "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def text(self) -> str:
        return self.log.read_text("utf-8", "replace")

    def wait_until_up(self, url: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"serve exited {self.proc.returncode}:\n{self.text()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        pytest.fail(f"serve did not answer on {url} within {timeout} s:\n{self.text()}")

    def stop(self) -> None:
        try:
            family = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            family = []
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        gone, alive = psutil.wait_procs(family, timeout=10)
        for p in alive:  # an app process textual-serve left behind
            p.kill()
        assert not alive, f"left running: {[p.pid for p in alive]}"


def test_public_prints_a_warning(tmp_path):
    port = free_port()
    server = Served([str(CLASSIFIER), "--host", "0.0.0.0", "--public", "--port", str(port)], tmp_path / "log")
    try:
        server.wait_until_up(f"http://127.0.0.1:{port}/")
        log = server.text()
        assert f"guidance-tui: warning: serving on every network interface (port {port}) with no authentication" \
            in log
    finally:
        server.stop()


def chromium_path() -> str:
    for candidate in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.skip("no Chromium on this machine (the Debian package `chromium`: bash scripts/install_browser.sh)")


_PIXELS = """async ([a, b, wanted]) => {
  const load = src => new Promise((ok, bad) => { const i = new Image(); i.onload = () => ok(i); i.onerror = bad; i.src = src; });
  const [ia, ib] = await Promise.all([load(a), load(b)]);
  const w = Math.min(ia.width, ib.width), h = Math.min(ia.height, ib.height);
  const c = document.createElement('canvas'); c.width = w; c.height = h;
  const ctx = c.getContext('2d');
  ctx.drawImage(ia, 0, 0); const da = ctx.getImageData(0, 0, w, h).data;
  ctx.clearRect(0, 0, w, h); ctx.drawImage(ib, 0, 0); const db = ctx.getImageData(0, 0, w, h).data;
  const want = new Set(wanted);
  let diff = 0, found = 0;
  for (let i = 0; i < da.length; i += 4) {
    if (da[i] !== db[i] || da[i + 1] !== db[i + 1] || da[i + 2] !== db[i + 2]) diff++;
    if (want.has((da[i] << 16) | (da[i + 1] << 8) | da[i + 2])) found++;
  }
  return {diff: diff / (w * h), found: found};
}"""


def test_the_app_in_a_headless_chromium(tmp_path):
    browser_path = chromium_path()
    from playwright.sync_api import sync_playwright

    from guidance_tui.export.html import palette_for

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    server = Served([str(CLASSIFIER), "--port", str(port)], tmp_path / "serve.log")
    frames: list[str] = []

    def text(since: int = 0) -> str:
        return ANSI.sub("", "".join(frames[since:]))

    def wait_for(page, words: list[str], since: int = 0, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = text(since)
            if all(w in seen for w in words):
                return
            page.wait_for_timeout(100)
        pytest.fail(f"the app never showed {words}; it sent:\n{text(since)[-3000:]}\nserver:\n{server.text()}")

    try:
        server.wait_until_up(url)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.on("websocket", lambda ws: ws.on(
                    "framereceived", lambda data: frames.append(data.decode("utf-8", "replace")
                                                                if isinstance(data, bytes) else data)))
                page.goto(url, wait_until="domcontentloaded")
                page.wait_for_selector("body.-first-byte", timeout=60_000)  # textual-serve: the app's first bytes
                # the replay app drew the run: its metrics bar (status, trace name, mode) and its tokens
                wait_for(page, ["reach_classifier.gtt", "REPLAY", "done", "Sentiment:", "classify"])
                page.wait_for_timeout(500)
                terminal = page.locator(".textual-terminal")
                before = terminal.screenshot()
                # press "?": the help screen opens (its title and key list come over the wire, the canvas changes)
                terminal.click()
                sent = len(frames)
                page.keyboard.press("?")
                wait_for(page, ["guidance-tui · keys", "esc to close", "Step back one token"], since=sent)
                page.wait_for_timeout(500)
                after = terminal.screenshot()
                pal, _ = palette_for("textual-dark")
                wanted = [int(c[1:], 16) for c in pal.prob_bg]
                blank = browser.new_page()
                result = blank.evaluate(_PIXELS, ["data:image/png;base64," + base64.b64encode(before).decode(),
                                                  "data:image/png;base64," + base64.b64encode(after).decode(),
                                                  wanted])
                assert result["found"] > 100, "no token on the screen has the app's probability colours"
                assert result["diff"] > 0.05, f"the screen hardly changed after '?': {result}"
                # escape closes the help again: the stream comes back on the wire
                sent = len(frames)
                page.keyboard.press("Escape")
                wait_for(page, ["Sentiment:"], since=sent)
            finally:
                browser.close()
    finally:
        server.stop()
    assert "Serving" in server.text()
