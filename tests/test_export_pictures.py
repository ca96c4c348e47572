"""`guidance-tui export --format html` (a self-contained page) and `--format svg` (the app's screen)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from guidance_tui.cli import main
from tracing import Alt, Backtrack, NodeClose, NodeOpen, RunEnd, RunStart, Token, TokenKind, TraceStore, read_trace
from tracing import write_trace

DATA = Path(__file__).resolve().parent / "data"
CLASSIFIER = DATA / "reach_classifier.gtt"  # recorded: guidance_tui/examples/classifier.py on the embedded Gemma
VOID = {"meta", "br", "hr", "img", "input", "link", "area", "base", "col", "embed", "source", "track", "wbr"}


class Page(HTMLParser):
    """Checks that every element is closed in order, and collects the tokens and the tree."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tokens: list[dict] = []
        self.token_text: list[str] = []
        self.nodes: list[dict] = []
        self.tags: list[tuple[str, dict]] = []
        self.style = ""
        self._in_token = False
        self._in_style = False
        self.doctype = ""

    def handle_decl(self, decl):
        self.doctype = decl

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag not in VOID:
            self.stack.append(tag)
        if tag == "span" and "data-i" in a:
            self.tokens.append(a)
            self.token_text.append("")
            self._in_token = True
        if tag == "li" and "data-node" in a:
            self.nodes.append(a)
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
            return
        self.stack.pop()
        if tag == "span":
            self._in_token = False
        self._in_style = False

    def handle_data(self, data):
        if self._in_token:
            self.token_text[-1] += data
        if self._in_style:
            self.style += data


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    return page


def tiny_events() -> list:
    store = TraceStore()
    t = 0
    for ev in [
        RunStart(script="tiny.py", model="tiny", backend="synthetic", wall_time=1.7e9),
        NodeOpen(node_id=1, kind="role", name="user"),
        Token(node_id=1, pos=0, id=5, bytes=b"<Q&A>", kind=TokenKind.PROMPT),
        NodeClose(node_id=1),
        NodeOpen(node_id=2, base_id=1, kind="gen", name="answer", grammar="start: /[a-z ]+/"),
        Token(node_id=2, pos=5, id=52, bytes=b" yes", prob=0.6, prob_raw=0.5, latency_us=20_000, mask_us=250,
              allowed=17, top=[Alt(52, b" yes", 0.5, False), Alt(53, b" \"no\"", 0.3, True)]),
        Token(node_id=2, pos=9, id=60, bytes=b" sir", prob=0.04, prob_raw=0.03, latency_us=20_000),
        Backtrack(node_id=2, n_tokens=1, bytes=b" sir", reason="grammar"),
        Token(node_id=2, pos=9, id=61, bytes=b"\n", kind=TokenKind.FORCED, prob=1.0),
        NodeClose(node_id=2, stop_reason="grammar"),
        RunEnd(status="done", generated_tokens=2, forced_tokens=1, prompt_tokens=1),
    ]:
        t += 1000
        ev.t_us = t
        store.append(ev, stamp=False)
    return list(store.events())


@pytest.fixture
def tiny(tmp_path) -> Path:
    path = tmp_path / "tiny.gtt"
    write_trace(path, tiny_events())
    return path


# -- html --------------------------------------------------------------------------------------
def test_html_page_of_a_recorded_run(tmp_path):
    out = tmp_path / "run.html"
    assert main(["export", str(CLASSIFIER), "--format", "html", "-o", str(out)]) == 0
    text = out.read_text("utf-8")
    page = parse(text)
    assert page.doctype.lower() == "doctype html" and not page.errors and not page.stack
    tokens = [ev for ev in read_trace(CLASSIFIER).events if isinstance(ev, Token)]
    assert len(page.tokens) == len(tokens)  # every token, backtracked ones too, in order
    assert "".join(page.token_text) == "".join(t.text for t in tokens)
    assert [int(a["data-i"]) for a in page.tokens] == list(range(len(tokens)))
    assert all(a["title"].startswith(f"#{a['data-i']} ") for a in page.tokens)
    # self-contained: inline style and script, nothing fetched
    for tag, a in page.tags:
        assert tag != "link" and "src" not in a and not a.get("href", "").startswith(("http", "//"))
    assert "url(" not in page.style and "@import" not in page.style
    # the program tree and the figures
    labels = re.findall(r'<li data-node="\d+" class="k-(\w+)">', text)
    assert labels.count("program") == 3 and labels.count("select") == 3 and labels.count("gen") == 3
    assert "label = &#x27;positive&#x27;" in text
    assert re.search(r'<span class="v">178</span><span class="l">tokens</span>', text)
    assert '<span class="v">done</span>' in text


def test_html_tooltips_and_colours(tiny, capsys):
    assert main(["export", str(tiny), "--format", "html"]) == 0
    text = capsys.readouterr().out
    page = parse(text)
    assert not page.errors
    prompt, yes, sir, newline = page.tokens
    assert page.token_text == ["<Q&A>", " yes", " sir", "\n"]  # escaped in the page, exact when read
    assert "&lt;Q&amp;A&gt;" in text
    assert prompt["data-kind"] == "prompt" and "role user" in prompt["title"] and "p " not in prompt["title"]
    tip = yes["title"]
    assert "generated · gen answer" in tip
    assert "p 0.600 after the mask · 0.500 before" in tip
    assert "latency 20.0 ms · mask 250 µs · allowed 17" in tip
    assert "top-k (before the mask):" in tip and "▸ ' yes'" in tip
    assert re.search(r"' \\?\"no\\?\"'\s+0\.300  masked", tip)
    assert "bt" in sir["class"].split() and "taken back by a backtrack (grammar)" in sir["title"]
    assert "u" in sir["class"].split()  # unlikely: underlined, as in the app
    assert "k2" in newline["class"].split() and "nl" in newline["class"].split()
    # the app's probability scale: a likely and an unlikely token get different colour classes, defined inline
    from guidance_tui.export.html import palette_for

    pal, _ = palette_for("textual-dark")
    colour_class = {c for c in yes["class"].split() if re.fullmatch(r"c\d+", c)}
    (cls,) = colour_class
    assert f".{cls}{{background:{pal.background('probability', 1, 0.6, 20_000, 20_000)}" in page.style
    (sir_cls,) = {c for c in sir["class"].split() if re.fullmatch(r"c\d+", c)}
    assert sir_cls != cls
    assert [n["data-node"] for n in page.nodes] == ["0", "1", "2"]


def test_html_theme(tiny, tmp_path):
    light = tmp_path / "light.html"
    assert main(["export", str(tiny), "--format", "html", "--theme", "textual-light", "-o", str(light)]) == 0
    dark = tmp_path / "dark.html"
    assert main(["export", str(tiny), "--format", "html", "-o", str(dark)]) == 0
    assert "background:#121212" in dark.read_text() and "background:#121212" not in light.read_text()


# -- svg ------------------------------------------------------------------------------------------
def svg_text(path: Path) -> str:
    root = ET.parse(path).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return "".join(root.itertext()).replace("\xa0", " ")


def test_svg_picture_of_the_app(tmp_path):
    out = tmp_path / "run.svg"
    assert main(["export", str(CLASSIFIER), "--format", "svg", "-o", str(out)]) == 0
    text = svg_text(out)
    assert "guidance-tui · reach_classifier.gtt" in text  # the window title
    assert "done" in text and "178" in text and "REPLAY" in text  # the metrics bar
    assert "Sentiment:" in text and "positive" in text  # the token stream
    assert "classify" in text and "select" in text and "reason" in text  # the tree
    # the probability colours of the stream are there as fills
    from guidance_tui.export.html import palette_for

    pal, _ = palette_for("textual-dark")
    fills = set(re.findall(r'fill="(#[0-9a-fA-F]{6})"', out.read_text()))
    assert {c.lower() for c in pal.prob_bg} & {f.lower() for f in fills}


def test_svg_size(tiny, tmp_path):
    out = tmp_path / "small.svg"
    assert main(["export", str(tiny), "--format", "svg", "--size", "80x24", "-o", str(out)]) == 0
    text = svg_text(out)
    assert "yes" in text and "REPLAY" in text


# -- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, code, message", [
    (["--format", "html", "--theme", "no-such-theme"], 2, "unknown theme 'no-such-theme'"),
    (["--format", "svg", "--size", "big"], 2, "--size: size 'big': expected COLUMNSxROWS"),
    (["--format", "svg", "--size", "10x5"], 2, "between 40x12 and 1000x500"),
])
def test_bad_picture_options(tiny, argv, code, message, capsys):
    assert main(["export", str(tiny), *argv]) == code
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.parametrize("fmt", ["html", "svg", "otlp"])
def test_pictures_of_something_that_is_not_a_trace(tmp_path, fmt, capsys):
    bogus = tmp_path / "notes.txt"
    bogus.write_text("hello")
    assert main(["export", str(bogus), "--format", fmt]) == 1
    assert capsys.readouterr().err.startswith("guidance-tui: ")


@pytest.mark.parametrize("fmt", ["html", "svg", "otlp"])
def test_never_written_over_the_trace(tiny, fmt, capsys):
    before = tiny.read_bytes()
    assert main(["export", str(tiny), "--format", fmt, "-o", str(tiny)]) == 2
    assert tiny.read_bytes() == before
    assert "is the trace being exported" in capsys.readouterr().err
