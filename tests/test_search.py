"""Search (headless): text across token boundaries, nodes, captures, next / previous; the jumps to
the least likely token and to the least certain choice; and the keys in the app."""

from __future__ import annotations

import math

from _app_support import small_store, sync
from test_compare import F, G, P, Run

from tracing import Alt, TraceStore, TraceTree

from guidance_tui.state.search import TextSearch, least_certain, lowest_prob, margin, search, step
from guidance_tui.state.token_index import TokenIndex


def run_events() -> list:
    r = Run()
    r.node(1, "literal", "Sentiment:", [("Sentiment", P), (":", P)])
    r.node(2, "select", "label", [(" neut", G, 0.34), ("ral", F, 1.0)], capture=True)
    r.node(3, "gen", "reason", [(" It", G, 0.05), (" was", G, float("nan")), (" neutral", G, 0.9)], capture=True)
    return r.end()


def indexed(events) -> tuple[TokenIndex, TraceTree]:
    store = TraceStore(events)
    idx = TokenIndex(store)
    idx.ingest()
    return idx, TraceTree.from_events(store.events())


def test_text_is_found_across_token_boundaries_and_ignoring_case():
    idx, _ = indexed(run_events())
    text = TextSearch(idx)
    assert text.token_hits("NEUTRAL") == [2, 6]  # " neut" + "ral", then " neutral"
    assert text.token_hits("t:") == [0]
    assert text.token_hits("absent") == []


def test_text_search_extends_as_tokens_arrive():
    events = run_events()
    store = TraceStore(events[:7])  # up to " neut"
    idx = TokenIndex(store)
    idx.ingest()
    text = TextSearch(idx)
    assert text.token_hits("neutral") == []
    store.extend(events[7:])
    idx.ingest()
    assert text.token_hits("neutral") == [2, 6]


def test_node_names_and_capture_names_and_values_are_hits_in_seq_order():
    idx, tree = indexed(run_events())
    hits = search("reason", idx, tree)
    assert [h.what for h in hits] == ["node", "capture"]
    assert hits[0].token == 4 and hits[0].node_id == 3  # the node's first token
    assert hits[1].label == "capture reason = ' It was neutral'"
    hits = search("neutral", idx, tree)
    assert [h.what for h in hits] == ["text", "capture", "text", "capture"]
    assert [h.seq for h in hits] == sorted(h.seq for h in hits)


def test_next_and_previous_wrap_around():
    idx, tree = indexed(run_events())
    hits = search("neutral", idx, tree)
    assert step(hits, -1, 1) == 0
    assert step(hits, hits[0].seq, 1) == 1
    assert step(hits, hits[-1].seq, 1) == 0  # past the last: the first
    assert step(hits, hits[0].seq, -1) == len(hits) - 1
    assert step([], 0, 1) is None


def test_the_lowest_probability_is_a_generated_token_and_nan_is_skipped():
    idx, _ = indexed(run_events())
    assert lowest_prob(idx) == 4  # " It" at 0.05; prompt tokens (NaN) and the NaN one are not candidates
    assert lowest_prob(idx, upto=3) == 2


def _tok_with(prob, top, allowed=17, after=()):
    from tracing import Token, TokenKind

    return Token(id=1, bytes=b" a", kind=TokenKind.GENERATED, prob=prob, prob_raw=prob / 2, top=list(top),
                 allowed=allowed, top_allowed=list(after))


def test_the_margin_is_over_the_next_allowed_token_after_the_mask():
    top = [Alt(9, b"7", 0.4, True), Alt(1, b" a", 0.25, False), Alt(2, b" b", 0.2, False)]
    after = [Alt(1, b" a", 0.5, False), Alt(2, b" b", 0.4, False)]
    assert math.isclose(margin(_tok_with(0.5, top, after=after), top), 0.1)
    # no after-mask list recorded: the allowed among the top-k, rescaled by p / p_raw (here 2)
    assert math.isclose(margin(_tok_with(0.5, top), top), 0.5 - 0.4)
    assert margin(_tok_with(0.5, top, allowed=1), top) is None  # no choice at all
    assert margin(_tok_with(1.0, [Alt(1, b" a", 0.5, False)]), [Alt(1, b" a", 0.5, False)]) is None


def test_the_least_certain_choice_has_the_smallest_margin():
    events = run_events()
    from tracing import Token

    toks = [e for e in events if isinstance(e, Token)]
    # " neut" 0.34 vs " pos" 0.33 after the mask: a near tie; " neutral" 0.9 vs 0.05
    toks[2].top = [Alt(toks[2].id, b" neut", 0.17, False), Alt(5, b" pos", 0.165, False)]
    toks[2].prob_raw = 0.17
    toks[6].top = [Alt(toks[6].id, b" neutral", 0.45, False), Alt(6, b" good", 0.025, False)]
    toks[6].prob_raw = 0.45
    idx, _ = indexed(events)
    t, m = least_certain(idx)
    assert t == 2 and math.isclose(m, 0.34 - 0.33, abs_tol=1e-9)


# -- the keys ---------------------------------------------------------------------------
@sync
async def test_slash_searches_and_n_and_shift_n_step_through_the_hits():
    from guidance_tui.app import InspectorApp

    app = InspectorApp(TraceStore(run_events()), use_monitor=False)
    async with app.run_test(size=(100, 30)) as pilot:
        scr = app.inspector
        await pilot.press("home", "slash")
        assert scr.search_bar.has_focus
        await pilot.press(*"neutral", "enter")
        await pilot.pause()
        assert not scr.search_bar.has_focus and scr._selected() == 2  # " neut|ral"
        await pilot.press("n")
        assert scr._selected() == 3  # the capture of "label", recorded after its last token
        await pilot.press("n")
        assert scr._selected() == 6
        await pilot.press("N")
        assert scr._selected() == 3
        await pilot.press("n", "n", "n")  # the capture of "reason", then round to the first hit
        assert scr._selected() == 2


@sync
async def test_typing_a_space_or_an_arrow_in_the_search_bar_does_not_move_the_timeline():
    from guidance_tui.app import InspectorApp

    app = InspectorApp(small_store(), use_monitor=False)
    async with app.run_test(size=(100, 30)) as pilot:
        scr = app.inspector
        await pilot.press("home")
        seq = scr.cursor.seq
        await pilot.press("slash", "w", "h", "space", "left", "right", "end", "home")
        assert scr.search_bar.value == "wh " and scr.cursor.seq == seq and not scr.cursor.playing
        await pilot.press("escape")
        assert not scr.search_bar.has_focus and not scr.search_bar.display


@sync
async def test_m_and_shift_m_jump_to_the_least_likely_token_and_the_least_certain_choice():
    from guidance_tui.app import InspectorApp

    app = InspectorApp(small_store(), use_monitor=False)
    async with app.run_test(size=(100, 30)) as pilot:
        scr = app.inspector
        idx = scr.index
        await pilot.press("home", "m")
        assert idx.token(scr._selected()).text == " is" and scr.detail_pane.shown_token == scr._selected()
        await pilot.press("M")  # " 4" at 0.7 against " 5" at 0.05: the only choice with a runner-up recorded
        assert idx.token(scr._selected()).text == " 4"
