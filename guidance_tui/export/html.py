"""A recorded run as one self-contained HTML page (inline CSS and script, no external assets).

The page shows what the inspector shows, for pasting into an issue or a report:

* the token stream, every token coloured by probability on the app's own scale
  (:class:`guidance_tui.widgets.colors.Palette` under a Textual theme,
  ``textual-dark`` by default): prompt text muted, forced tokens in the forced
  colour and italic, unlikely tokens underlined, backtracked ones struck
  through, role names as labels.  Each token has a tooltip (its ``title``): its
  kind and node, probability after and before the grammar mask, latency, mask
  time, allowed-set size, its top-k with the masked ones marked, and the
  backtrack that took it back.  Clicking a token shows the same in a panel.
* the program tree (roles, programs, gen/select/regex/json, tool calls,
  branches), with token counts, stop reasons and captures; clicking a node
  highlights its tokens.
* the run's figures, as the metrics bar has them (tokens, forced share,
  tokens/s, time to first token, latency, backtracks) and a few more.

Each token is one ``<span class="t ...">`` inside ``<pre id="tokens">``, with
``data-i`` (its index), ``data-node``, ``data-kind`` and ``data-p`` / ``data-p-raw``.

Textual is imported for its colour maths only (the Palette); nothing here runs
the app or imports the engines.
"""

from __future__ import annotations

import html
import os
from typing import Iterable, Iterator

from tracing import AnyEvent, TraceTree, display_text

from guidance_tui.export.runfacts import KIND_NAMES, RunFacts, collect

DEFAULT_THEME = "textual-dark"
TOP_K_SHOWN = 10


def palette_for(theme: str = DEFAULT_THEME):
    """The app's token palette under a built-in Textual theme (its background as the pane)."""
    from textual.theme import BUILTIN_THEMES

    from guidance_tui.widgets.colors import Palette, ThemeColors

    t = BUILTIN_THEMES.get(theme)
    if t is None:
        raise ValueError(f"unknown theme {theme!r} (one of: {', '.join(sorted(BUILTIN_THEMES))})")
    v = t.to_color_system().generate()
    return Palette(ThemeColors.from_variables(v, t.dark, background=v.get("background"))), v


def theme_names() -> list[str]:
    from textual.theme import BUILTIN_THEMES

    return sorted(BUILTIN_THEMES)


# -- formatting -----------------------------------------------------------------------
def _p(x: float) -> str:
    return "?" if x != x else f"{x:.3f}"


def _ms(us: float | None) -> str:
    if us is None:
        return "–"
    return f"{us / 1000:.1f} ms" if us >= 1000 else f"{us:.0f} µs"


def _secs(s: float | None) -> str:
    if s is None:
        return "–"
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s"


def _rate(r: float | None) -> str:
    return "–" if r is None else (f"{r:.1f}" if r < 1000 else f"{r / 1000:.1f}k")


def _shown(data: bytes) -> str:
    """A token's text as a readable literal (for tooltips): repr-like, quotes and escapes visible."""
    text = display_text(data)
    return "'" + text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("'", "\\'") + "'"


def _e(text: str) -> str:
    return html.escape(text, quote=True)


# -- the page -----------------------------------------------------------------------------
def render_html(events: Iterable[AnyEvent], *, title: str = "", theme: str = DEFAULT_THEME,
                facts: RunFacts | None = None) -> str:
    """The page for a run's events (see the module docstring)."""
    return "".join(iter_html(events, title=title, theme=theme, facts=facts))


def iter_html(events: Iterable[AnyEvent], *, title: str = "", theme: str = DEFAULT_THEME,
              facts: RunFacts | None = None, batch: int = 2048) -> Iterator[str]:
    """The page in pieces (a big run's page is never one string in memory)."""
    from tracing import TraceStore

    from guidance_tui.state.stats import stats_at
    from guidance_tui.state.token_index import TokenIndex

    events = list(events)
    facts = facts if facts is not None else collect(events)
    pal, variables = palette_for(theme)
    store = TraceStore(events)
    index = TokenIndex(store)
    index.ingest()
    stats = stats_at(index, store.last_seq, facts.status)
    tree = facts.tree
    label_of = {nid: n.label for nid, n in tree.by_id.items()}

    # Every background the palette can give a token: the probability scale, the kinds, "unknown".
    css_classes: dict[str, str] = {}  # background colour -> class
    for bg in [*pal.prob_bg, *pal.kind_bg.values(), pal.unknown_bg]:
        css_classes.setdefault(bg, f"c{len(css_classes)}")

    def bg_class(bg: str | None) -> str:
        if bg is None:
            return ""
        cls = css_classes.get(bg)
        if cls is None:  # pragma: no cover - the palette gave a colour outside its scales
            cls = css_classes[bg] = f"c{len(css_classes)}"
        return cls

    name = title or (os.path.basename(facts.start.script) if facts.start is not None and facts.start.script else "run")
    css = _css(pal, variables, css_classes)
    yield "".join([
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
        "<meta name=\"generator\" content=\"guidance-tui\">\n",
        f"<title>guidance-tui · {_e(name)}</title>\n<style>\n{css}</style>\n</head>\n<body>\n",
        f"<header><h1>{_e(name)}</h1>{_run_line(facts)}</header>\n",
        _metrics(facts, stats),
        "<main>\n<section id=\"stream\"><h2>Tokens</h2>",
        _legend(pal),
        "<pre id=\"tokens\">",
    ])
    median = _median_latency(index)
    parts: list[str] = []
    for i in range(index.n):
        tok = index.token(i)
        kind = int(tok.kind)
        prob = tok.prob
        bg = pal.background("probability", kind, prob, tok.latency_us, median)
        classes = ["t", f"k{kind}"]
        if bg is not None:
            classes.append(bg_class(bg))
        if pal.underlined("probability", kind, prob, tok.latency_us, median):
            classes.append("u")
        bt = index.backtrack_of(i)
        if bt is not None:
            classes.append("bt")
        if i in index.labels:
            parts.append(f'<span class="role">{_e(index.labels[i])}</span>')
        tip = _tooltip(i, tok, label_of.get(tok.node_id, ""), store.alternatives(tok.seq), bt)
        text = display_text(tok.bytes)
        if "\n" in text:
            classes.append("nl")
        attrs = (f'class="{" ".join(classes)}" data-i="{i}" data-node="{tok.node_id}" '
                 f'data-kind="{KIND_NAMES.get(kind, kind)}" data-p="{_p(prob)}" data-p-raw="{_p(tok.prob_raw)}" '
                 f'title="{_e(tip)}"')
        parts.append(f"<span {attrs}>{_e(text)}</span>")
        if len(parts) >= batch:
            yield "".join(parts)
            parts.clear()
    yield "".join(parts)
    yield "".join([
        "</pre>\n<div id=\"detail\" hidden></div>\n</section>\n",
        f"<aside id=\"tree\"><h2>Program</h2>{_tree(tree, facts)}</aside>\n</main>\n",
        f"<script>\n{_SCRIPT}</script>\n</body>\n</html>\n",
    ])


def _median_latency(index) -> float:
    lats = sorted(index.latency[i] for i in range(index.n) if index.kind[i] == 1 and index.latency[i] > 0)
    return float(lats[len(lats) // 2]) if lats else 0.0


def _tooltip(i: int, tok, node_label: str, top: list, bt) -> str:
    kind = KIND_NAMES.get(int(tok.kind), str(int(tok.kind)))
    lines = [f"#{i} {_shown(tok.bytes)} · {kind}" + (f" · {node_label}" if node_label else "")]
    if int(tok.kind) != 0:
        lines.append(f"p {_p(tok.prob)} after the mask · {_p(tok.prob_raw)} before")
        figures = []
        if tok.latency_us > 0:
            figures.append(f"latency {_ms(tok.latency_us)}")
        if tok.mask_us > 0:
            figures.append(f"mask {_ms(tok.mask_us)}")
        if tok.allowed >= 0:
            figures.append(f"allowed {tok.allowed:,}")
        if figures:
            lines.append(" · ".join(figures))
    lines.append(f"token id {tok.id}")
    if top:
        lines.append("top-k (before the mask):")
        for alt in top[:TOP_K_SHOWN]:
            mark = "  masked" if alt.masked else ""
            chosen = "▸" if alt.id == tok.id else " "
            lines.append(f" {chosen} {_shown(alt.bytes):<16} {_p(alt.prob)}{mark}")
    if tok.top_allowed:
        lines.append("top-k after the mask:")
        for alt in tok.top_allowed[:TOP_K_SHOWN]:
            chosen = "▸" if alt.id == tok.id else " "
            lines.append(f" {chosen} {_shown(alt.bytes):<16} {_p(alt.prob)}")
    if tok.prob_kind:
        lines.append(f"probability kind: {tok.prob_kind.name.lower().replace('_', ' ')}")
    if bt is not None:
        lines.append(f"taken back by a backtrack ({bt.reason or 'unknown'})")
    return "\n".join(lines)


def _run_line(facts: RunFacts) -> str:
    start = facts.start
    bits = []
    if start is not None:
        if start.model:
            bits.append(f"model {start.model}")
        if start.backend:
            bits.append(f"backend {start.backend}")
        if start.script:
            bits.append(f"script {start.script}")
    bits.append(f"status {facts.status}")
    line = " · ".join(_e(b) for b in bits)
    out = f'<p class="run">{line}</p>'
    if facts.end is not None and facts.end.error:
        out += f'<p class="error">{_e(facts.end.error.strip().splitlines()[-1] if facts.end.error.strip() else "")}</p>'
    return out


def _metrics(facts: RunFacts, stats) -> str:
    tot = facts.root.total
    duration = (facts.t_last - facts.t_first) / 1e6
    figures = [
        ("status", facts.status),
        ("tokens", f"{stats.tokens:,}"),
        ("prompt / generated / forced", f"{tot.prompt:,} / {tot.generated:,} / {tot.forced:,}"),
        ("forced", "–" if stats.forced_pct is None else f"{stats.forced_pct:.0f}%"),
        ("tok/s", _rate(stats.tok_per_s)),
        ("TTFT", _secs(stats.ttft_s)),
        ("latency/tok", _ms(stats.mean_latency_us)),
        ("backtracks", f"{stats.backtracks_total:,}"),
        ("mean p", "–" if tot.prob_mean is None else f"{tot.prob_mean:.3f}"),
        ("lowest p", "–" if tot.prob_lowest is None else f"{tot.prob_lowest:.3f}"),
        ("mask/tok", _ms(tot.mask_mean_us)),
        ("duration", _secs(duration)),
    ]
    cells = "".join(f'<div class="fig"><span class="v">{_e(v)}</span><span class="l">{_e(k)}</span></div>'
                    for k, v in figures)
    return f'<section id="metrics">{cells}</section>\n'


def _legend(pal) -> str:
    swatches = []
    for b, colour in enumerate(pal.prob_bg):
        lo, hi = b / len(pal.prob_bg), (b + 1) / len(pal.prob_bg)
        swatches.append(f'<span class="sw" style="background:{colour}" title="p {lo:.1f}–{hi:.1f}"></span>')
    return ('<div class="legend">p <span class="scale">0 ' + "".join(swatches) + ' 1</span> '
            f'<span class="t k2" style="background:{pal.kind_bg[2]}">forced</span> '
            '<span class="t k0">prompt</span> <span class="t u">unlikely</span> '
            '<span class="t bt">taken back</span></div>\n')


def _tree(tree: TraceTree, facts: RunFacts) -> str:
    out: list[str] = []

    def node_html(n) -> None:
        if n.kind == "branch":
            out.append(f'<li class="branch"><span class="label">{_e(n.name)}</span>')
        else:
            f = facts.nodes.get(n.node_id)
            bits = []
            if f is not None and f.total.tokens:
                bits.append(f"{f.total.tokens} tok")
            if f is not None and f.total.prob_mean is not None:
                bits.append(f"p̄ {f.total.prob_mean:.2f}")
            if n.stop_reason:
                bits.append(n.stop_reason)
            caps = "".join(f'<span class="cap">{_e(c.name)} = {_e(repr(c.value))}</span>' for c in n.captures)
            info = f' <span class="info">{_e(" · ".join(bits))}</span>' if bits else ""
            out.append(f'<li data-node="{n.node_id}" class="k-{_e(n.kind)}"><span class="label">'
                       f'<b>{_e(n.kind)}</b> {_e(n.name)}</span>{info}{caps}')
        if n.children:
            out.append("<ul>")
            for c in n.children:
                node_html(c)
            out.append("</ul>")
        out.append("</li>")

    out.append('<ul class="tree">')
    out.append('<li data-node="0" class="root"><span class="label"><b>run</b></span>')
    if tree.root.children:
        out.append("<ul>")
        for c in tree.root.children:
            node_html(c)
        out.append("</ul>")
    out.append("</li></ul>")
    return "".join(out)


def _css(pal, v: dict, classes: dict[str, str]) -> str:
    bg = v.get("background", "#121212")
    surface = v.get("surface", "#1e1e1e")
    fg = pal.fg
    muted = pal.muted
    primary = v.get("primary", "#0178d4")
    accent = v.get("accent", "#fea62b")
    error = v.get("error", "#b93c5b")
    colour_rules = "".join(f".{cls}{{background:{bg_};color:{pal.text_on(bg_)}}}\n" for bg_, cls in classes.items())
    return f"""body{{background:{bg};color:{fg};font:14px/1.45 system-ui,sans-serif;margin:0;padding:16px}}
h1{{font-size:18px;margin:0 0 4px}} h2{{font-size:13px;text-transform:uppercase;letter-spacing:.06em;color:{muted};margin:0 0 8px}}
.run{{color:{muted};margin:0}} .error{{color:{error};margin:4px 0 0}}
#metrics{{display:flex;flex-wrap:wrap;gap:6px;margin:12px 0}}
.fig{{background:{surface};padding:6px 10px;border-radius:4px;display:flex;flex-direction:column;min-width:80px}}
.fig .v{{font:600 15px ui-monospace,monospace}} .fig .l{{color:{muted};font-size:11px}}
main{{display:flex;gap:16px;align-items:flex-start}}
#stream{{flex:3;min-width:0}} #tree{{flex:1;min-width:220px;background:{surface};padding:8px 12px;border-radius:4px}}
#tokens{{background:{pal.pane if pal.pane != "default" else bg};padding:10px;border-radius:4px;white-space:pre-wrap;
word-break:break-all;font:13px/1.6 ui-monospace,'DejaVu Sans Mono',monospace;margin:0}}
.t{{color:{pal.text_on(None)};border-radius:2px;cursor:default}}
.t.k0{{color:{muted}}} .t.k2{{font-style:italic}} .t.u{{text-decoration:underline}}
.t.bt{{text-decoration:line-through;opacity:.45}} .t.nl::before{{content:"⏎";color:{muted};opacity:.6}}
.t.sel,.t.hl{{outline:1px solid {accent}}} .t.sel{{background:{accent};color:{bg}}}
.role{{background:{primary};color:#fff;font-weight:bold;padding:0 4px;margin-right:4px;border-radius:2px}}
{colour_rules}.legend{{color:{muted};font-size:12px;margin-bottom:6px}} .scale{{white-space:nowrap}}
.sw{{display:inline-block;width:14px;height:12px;vertical-align:middle}}
#detail{{white-space:pre;font:12px/1.5 ui-monospace,monospace;background:{surface};padding:8px;margin-top:8px;border-radius:4px}}
.tree,.tree ul{{list-style:none;margin:0;padding-left:14px}} .tree{{padding-left:0;font-size:13px}}
.tree .label{{cursor:pointer}} .tree .label:hover{{color:{accent}}} .tree .on>.label{{color:{accent}}}
.tree .info{{color:{muted};font-size:11px}} .tree .branch>.label{{color:{muted};font-style:italic}}
.cap{{display:block;color:{muted};font:11px ui-monospace,monospace;padding-left:8px}}
"""


_SCRIPT = """(function(){
var detail=document.getElementById('detail');
var toks=document.querySelectorAll('#tokens .t');
function clear(c){document.querySelectorAll('.'+c).forEach(function(e){e.classList.remove(c);});}
document.getElementById('tokens').addEventListener('click',function(ev){
  var t=ev.target.closest('.t'); if(!t)return; clear('sel'); t.classList.add('sel');
  detail.textContent=t.getAttribute('title'); detail.hidden=false;});
document.querySelectorAll('#tree .label').forEach(function(l){l.addEventListener('click',function(){
  var li=l.parentElement, ids={}; clear('hl'); clear('on'); li.classList.add('on');
  li.querySelectorAll('[data-node]').forEach(function(n){ids[n.getAttribute('data-node')]=1;});
  if(li.hasAttribute('data-node'))ids[li.getAttribute('data-node')]=1;
  var first=null; toks.forEach(function(t){if(ids[t.getAttribute('data-node')]){t.classList.add('hl');first=first||t;}});
  if(first)first.scrollIntoView({block:'center'});});});
})();
"""
