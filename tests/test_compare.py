"""Comparing two runs (headless): node alignment, text alignment, figures, the plain summary."""

from __future__ import annotations

import math

from tracing import Alt, Backtrack, Capture, NodeClose, NodeOpen, RunEnd, RunStart, Token, TokenKind

from guidance_tui.state.compare import (
    build_side, compare, prob_deltas, summary_lines, token_rows,
)

P, G, F = TokenKind.PROMPT, TokenKind.GENERATED, TokenKind.FORCED


class Run:
    """A tiny run written by hand: nodes with tokens, each event stamped 100 ms after the last."""

    def __init__(self, model: str = "m", backend: str = "llamacpp") -> None:
        self.ev: list = [RunStart(script="s.py", model=model, backend=backend)]
        self.pos = 0
        self.t = 0
        self.last = 0

    def _add(self, ev, dt: int = 100_000):
        self.t += dt
        ev.t_us = self.t
        self.ev.append(ev)

    def node(self, nid: int, kind: str, name: str, tokens, parent: int = 0, grammar: str = "",
             base: int | None = None, capture: bool = False):
        self._add(NodeOpen(node_id=nid, parent_id=parent, base_id=self.last if base is None else base, kind=kind,
                           name=name, grammar=grammar))
        text = b""
        for item in tokens:
            data, kind_, prob = (item + (0.5,))[:3] if isinstance(item, tuple) else (item, G, 0.5)
            data = data.encode()
            self._add(Token(id=sum(data) % 997, bytes=data, node_id=nid, pos=self.pos, kind=kind_, prob=prob,
                            prob_raw=prob))
            self.pos += len(data)
            text += data
        if capture:
            self._add(Capture(node_id=nid, name=name, value=text.decode()))
        self._add(NodeClose(node_id=nid, stop_reason="grammar"))
        self.last = nid
        return self

    def backtrack(self, nid: int, data: str):
        self._add(Backtrack(node_id=nid, n_tokens=1, bytes=data.encode(), reason="stop"))
        self.pos -= len(data)
        return self

    def end(self):
        self._add(RunEnd(status="done"))
        return self.ev


def sentiment(prompt="Review: great phone.", label=(("Sentiment", F, 1.0), (":", F, 1.0), (" positive", G, 0.6)),
              grammar='start: "positive" | "negative"', model="m") -> list:
    r = Run(model=model)
    r.node(1, "literal", prompt[:10], [(w, P) for w in prompt.replace(" ", "\0 ").split("\0")])
    r.node(2, "select", "label", label, grammar=grammar, capture=True)
    r.node(3, "gen", "reason", [(" It", G, 0.3), (" works", G, 0.8), (".", G, 0.9)])
    return r.end()


def test_identical_runs_have_no_divergence():
    cmp = compare(build_side(sentiment(), "a"), build_side(sentiment(), "b"))
    assert cmp.first is None
    assert all(p.paired and p.same_text for p in cmp.pairs)
    assert "no divergence" in "\n".join(summary_lines(cmp))


def test_a_different_choice_is_the_first_divergence_with_both_texts():
    b = sentiment(label=(("Sentiment", F, 1.0), (":", F, 1.0), (" negative", G, 0.3)))
    cmp = compare(build_side(sentiment(), "a.gtt"), build_side(b, "b.gtt"))
    first = cmp.pairs[cmp.first]
    assert first.label == "select label"
    assert first.diverge_at == len("Sentiment: ")  # the space both sampled is shared text
    assert not first.prompt_differs
    rows = token_rows(first)
    assert [r.same for r in rows] == [True, True, False]
    text = "\n".join(summary_lines(cmp))
    assert "first divergence: select label, at byte 11: the generated text differs" in text
    assert "A │ Sentiment: ⟦positive" in text and "B │ Sentiment: ⟦negative" in text


def test_probability_deltas_are_b_minus_a_on_the_same_sampled_tokens():
    b = Run()
    b.node(1, "literal", "Review: gr", [(w, P) for w in "Review: great phone.".replace(" ", "\0 ").split("\0")])
    b.node(2, "select", "label", [("Sentiment", F, 1.0), (":", F, 1.0), (" positive", G, 0.9)], capture=True,
           grammar='start: "positive" | "negative"')
    b.node(3, "gen", "reason", [(" It", G, 0.5), (" works", G, 0.8), (".", G, 0.9)])
    cmp = compare(build_side(sentiment(), "a"), build_side(b.end(), "b"))
    assert cmp.first is None  # the same text: probabilities differ, choices do not
    got = {data: round(pb - pa, 6) for data, pa, pb in prob_deltas(cmp.pairs[1])}
    assert got == {b"Sentiment": 0.0, b":": 0.0, b" positive": 0.3}
    text = "\n".join(summary_lines(cmp))
    assert "shared sampled tokens: 6, mean |Δp| 8.3 points; the largest:" in text
    assert "  ' positive' in select label: 60.0% → 90.0% (+30.0)" in text
    assert "  ' It' in gen reason: 30.0% → 50.0% (+20.0)" in text
    assert prob_deltas(cmp.pairs[0]) == []  # prompt tokens carry no probability to compare


def test_a_different_prompt_is_said_to_be_a_prompt_difference():
    cmp = compare(build_side(sentiment(), "a"), build_side(sentiment(prompt="Review: awful phone."), "b"))
    first = cmp.pairs[cmp.first]
    assert first.label == "prompt text" and first.prompt_differs
    assert first.diverge_at == len("Review: ")
    assert "prompt text, at byte 8: the prompts differ" in "\n".join(summary_lines(cmp))


def test_the_same_text_cut_into_other_tokens_is_the_same_and_grouped_by_shared_offsets():
    b = Run()
    b.node(1, "literal", "Review: gr", [(w, P) for w in "Review: great phone.".replace(" ", "\0 ").split("\0")])
    b.node(2, "select", "label", [("Sent", F, 1.0), ("iment:", F, 1.0), (" positive", G, 0.6)], capture=True,
           grammar='start: "positive" | "negative"')
    b.node(3, "gen", "reason", [(" It", G, 0.3), (" works", G, 0.8), (".", G, 0.9)])
    cmp = compare(build_side(sentiment(), "a"), build_side(b.end(), "b"))
    assert cmp.first is None
    rows = token_rows(cmp.pairs[1])
    assert [(r.a1 - r.a0, r.b1 - r.b0, r.same) for r in rows] == [(2, 2, False), (1, 1, True)]


def test_a_grammar_difference_shows_both_grammars():
    b = sentiment(label=(("Sentiment", F, 1.0), (":", F, 1.0), (" mixed", G, 0.4)),
                  grammar='start: "positive" | "negative" | "mixed"')
    cmp = compare(build_side(sentiment(), "a"), build_side(b, "b"))
    assert cmp.pairs[cmp.first].grammar_differs
    text = "\n".join(summary_lines(cmp))
    assert 'grammar A │ start: "positive" | "negative"' in text
    assert 'grammar B │ start: "positive" | "negative" | "mixed"' in text


def test_a_node_only_one_side_has_does_not_shift_the_later_pairs():
    b = Run()
    b.node(1, "literal", "Review: gr", [(w, P) for w in "Review: great phone.".replace(" ", "\0 ").split("\0")])
    b.node(9, "gen", "thought", [(" Hmm", G, 0.2)])
    b.node(2, "select", "label", [("Sentiment", F, 1.0), (":", F, 1.0), (" positive", G, 0.6)], capture=True,
           grammar='start: "positive" | "negative"')
    b.node(3, "gen", "reason", [(" It", G, 0.3), (" works", G, 0.8), (".", G, 0.9)])
    cmp = compare(build_side(sentiment(), "a"), build_side(b.end(), "b"))
    labels = [(p.a.label if p.a else None, p.b.label if p.b else None) for p in cmp.pairs]
    assert labels == [("prompt text", "prompt text"), (None, "gen thought"), ("select label", "select label"),
                      ("gen reason", "gen reason")]
    assert cmp.first == 1 and cmp.differing == [1]
    assert "1 only in B" in "\n".join(summary_lines(cmp))


def test_tokens_a_backtrack_took_back_are_not_part_of_the_text():
    a = Run()
    a.node(1, "gen", "reason", [(" It", G, 0.3), (" works", G, 0.8), ("\n", G, 0.1)])
    a.backtrack(1, "\n")
    b = Run()
    b.node(1, "gen", "reason", [(" It", G, 0.3), (" works", G, 0.8)])
    cmp = compare(build_side(a.end(), "a"), build_side(b.end(), "b"))
    assert cmp.first is None
    assert cmp.pairs[0].a.text == b" It works" and cmp.pairs[0].a.n_tokens == 2


def test_node_figures_count_the_subtree_and_time_its_span():
    r = Run()
    r._add(NodeOpen(node_id=1, parent_id=0, base_id=0, kind="role", name="assistant"))
    r.last = 1
    r.node(2, "select", "label", [("Sentiment", F, 1.0), (":", F, 1.0), (" positive", G, 0.6)], parent=1)
    r.node(3, "gen", "reason", [(" It", G, 0.3)], parent=1)
    r._add(NodeClose(node_id=1))
    side = build_side(r.end(), "a")
    role, select, gen = side.nodes
    assert select.counts == [0, 1, 2] and gen.counts == [0, 1, 0]
    assert role.counts == [0, 2, 2] and role.depth == 0 and select.depth == 1
    assert math.isclose(select.forced_share, 2 / 3)
    assert math.isclose(select.seconds, 0.4)  # open, 3 tokens, close: 100 ms apart
    assert math.isclose(select.tok_per_s, 3 / 0.4)


def test_the_per_node_table_has_both_sides_and_the_deltas():
    b = sentiment(label=(("Sentiment", F, 1.0), (":", F, 1.0), (" neg", G, 0.3), ("ative", F, 1.0)))
    text = summary_lines(compare(build_side(sentiment(), "a"), build_side(b, "b")))
    header = next(i for i, line in enumerate(text) if line.startswith("node "))
    label_row = next(line for line in text[header:] if line.startswith("select label"))
    cells = label_row.split()
    assert cells[2:5] == ["3", "4", "+1"]  # tokens A, B, delta
    assert cells[5:7] == ["67%", "75%"]  # forced share A, B


def test_alternatives_do_not_matter_to_the_alignment():
    a = sentiment()
    for ev in a:
        if isinstance(ev, Token) and ev.kind == G:
            ev.top = [Alt(1, b"x", 0.5, True)]
    cmp = compare(build_side(a, "a"), build_side(sentiment(), "b"))
    assert cmp.first is None
