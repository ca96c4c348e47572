"""The guidance bridge's converter: the child's JSON lines as our events (no guidance needed).

The lines here are shaped like those ``guidance_tui/bridge/_inject.py`` sends for guidance 0.3.1
(ids and parents as guidance numbers its trace nodes: an input on a copy of the model, then each
output on a new id whose parent is the previous one).
"""

from __future__ import annotations

import base64
import math

from tracing import (Backtrack, Capture, Message, Metric, NodeClose, NodeOpen, ProbKind, Token, TokenKind, TraceStore,
                     decode_trace, encode_trace)

from guidance_tui.bridge.convert import PROBS_OFF, Converter


def b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


class Feeder:
    """A converter and a store, fed line by line as BridgeRun does."""

    def __init__(self) -> None:
        self.conv = Converter()
        self.store = TraceStore()

    def __call__(self, **line) -> list:
        events = self.conv.feed(line)
        for ev in events:
            self.store.append(ev)
        return events

    def finish(self, status: str = "done") -> None:
        for ev in self.conv.finish(status):
            self.store.append(ev)

    def text(self) -> str:
        return self.store.text_at(self.store.last_seq)

    def of(self, kind):
        return [e for e in self.store.events() if isinstance(e, kind)]


def tok(f: Feeder, gid: int, parent: int, text: str, k: str = "generated", p=None, top=None, lat=1.5):
    return f(t="tok", id=gid, parent=parent, b=b64(text), k=k, p=p, lat=lat, top=top)


def literal(f: Feeder, gid: int, parent, text: str, next_id: int) -> int:
    """A literal input and its prompt tokens (one per word), numbered as guidance does: the input
    and the first output on ``gid``, each further output on a new id (from ``next_id``) whose
    parent is the previous one.  Returns the id of the last output."""
    f(t="in", id=gid, parent=parent, attr="literal", kind="literal", name=text[:24], grammar="")
    words = text.split(" ")
    prev_id, prev_parent = gid, parent
    for i, word in enumerate(words):
        piece = word if i == 0 else " " + word
        if i == 0:
            tok(f, gid, parent, piece, k="prompt")
        else:
            prev_parent, prev_id = prev_id, next_id + i - 1
            tok(f, prev_id, prev_parent, piece, k="prompt")
    return prev_id


def test_a_literal_then_a_select_rebuild_the_text_with_one_node_each():
    f = Feeder()
    last = literal(f, 1, 0, "Q: Is water wet? A:", 2)
    f(t="in", id=9, parent=last, attr="grammar", kind="select", name="ans", grammar="start: ans")
    tok(f, 9, last, " yes", p=0.04, top=[[b64(" Yes"), 0.38, True], [b64(" yes"), 0.04, False]])
    f(t="cap", id=10, parent=9, name="ans", value=" yes", lp=None, append=False)
    f.finish()
    opens = f.of(NodeOpen)
    assert [(o.kind, o.name) for o in opens] == [("literal", "Q: Is water wet? A:"), ("select", "ans")]
    assert opens[1].base_id == opens[0].node_id and opens[1].grammar == "start: ans"
    assert f.text() == "Q: Is water wet? A: yes"
    assert [c.value for c in f.of(Capture)] == [" yes"]
    assert len(f.of(NodeClose)) == 2


def test_guidance_probabilities_are_before_the_mask_and_what_it_lacks_stays_unknown():
    f = Feeder()
    f(t="in", id=1, parent=None, attr="grammar", kind="gen", name="x", grammar="")
    tok(f, 1, None, "a", p=0.25, top=[[b64("b"), 0.5, True], [b64("a"), 0.25, False]], lat=2.5)
    tok(f, 2, 1, "c", k="forced", p=0.9)
    tok(f, 3, 2, "d", p=None, top=[[b64("d"), None, False]])
    gen, forced, blind = f.of(Token)
    assert math.isnan(gen.prob) and gen.prob_raw == 0.25
    assert gen.prob_kind == ProbKind.BEFORE_MASK  # what guidance computes: the number is before the mask
    assert [(a.bytes, a.prob, a.masked) for a in gen.top] == [(b"b", 0.5, True), (b"a", 0.25, False)]
    assert gen.id == -1 and all(a.id == -1 for a in gen.top)  # guidance's trace has no token ids
    assert gen.mask_us == -1 and gen.allowed == -1 and gen.latency_us == 2500
    assert forced.kind == TokenKind.FORCED and forced.prob == 1.0 and forced.allowed == 1 and forced.prob_raw == 0.9
    assert math.isnan(blind.prob) and math.isnan(blind.prob_raw) and blind.top == []


def test_unknowns_survive_the_trace_file():
    f = Feeder()
    f(t="in", id=1, parent=None, attr="grammar", kind="gen", name="x", grammar="")
    for i, piece in enumerate(["one", " two", " one"]):
        tok(f, i + 1, i or None, piece, p=None if i == 1 else 0.5, top=[[b64(piece), None, False], [b64("zz"), 0.1, True]])
    f.finish()
    back = [e for e in decode_trace(encode_trace(f.store.events())).events if isinstance(e, Token)]
    assert [t.bytes for t in back] == [b"one", b" two", b" one"]
    assert all(t.id == -1 and t.mask_us == -1 for t in back)
    assert math.isnan(back[1].prob_raw) and back[0].prob_raw == 0.5
    assert [a.bytes for a in back[2].top] == [b" one", b"zz"]


def test_a_backtrack_before_a_nodes_first_token_is_token_healing():
    f = Feeder()
    last = literal(f, 1, 0, "Name: Jo", 2)
    f(t="in", id=5, parent=last, attr="grammar", kind="gen", name="n", grammar="")
    f(t="bt", id=5, parent=last, n=1, b=b64(" Jo"))
    tok(f, 6, 5, " John")
    f(t="bt", id=7, parent=6, n=1, b=b64(" John"))
    f.finish()
    heal, other = f.of(Backtrack)
    assert heal.reason == "healing" and heal.pos == len("Name:")
    assert other.reason == "" and other.n_tokens == 1
    assert f.text() == "Name:"


def test_reusing_an_older_model_is_a_branch_with_that_models_text():
    f = Feeder()
    base = literal(f, 1, 0, "Base text", 2)
    f(t="in", id=10, parent=base, attr="grammar", kind="gen", name="a", grammar="")
    tok(f, 10, base, " first")
    f(t="in", id=20, parent=base, attr="grammar", kind="gen", name="b", grammar="")
    tok(f, 20, base, " second")
    f.finish()
    base_node = f.of(NodeOpen)[0].node_id
    a, b = f.of(NodeOpen)[1:]
    assert a.base_id == base_node and b.base_id == base_node
    assert f.text() == "Base text second"
    assert f.store.text_at(next(c.seq for c in f.of(NodeClose) if c.node_id == a.node_id)) == "Base text first"
    assert "branch from" in f.store.tree().render()


def test_a_fresh_model_starts_from_empty_text():
    f = Feeder()
    literal(f, 1, None, "One model", 2)
    literal(f, 30, None, "Another", 31)
    f.finish()
    assert f.of(NodeOpen)[1].base_id == 0
    assert f.text() == "Another"


def test_a_role_block_is_a_container_holding_its_opener_and_closer_tokens():
    f = Feeder()
    f(t="in", id=1, parent=None, attr="role_open", kind="role", name="user", grammar="")
    tok(f, 1, None, "<start_of_turn>", k="prompt")
    tok(f, 2, 1, "user\n", k="prompt")
    last = literal(f, 3, 2, "Hi there", 4)
    f(t="in", id=5, parent=last, attr="role_close", kind="role", name="user", grammar="")
    f(t="bt", id=5, parent=last, n=1, b=b64(" there"))  # healing the prompt's last token
    tok(f, 6, 5, " there", k="prompt")
    tok(f, 8, 6, "<end_of_turn>\n", k="prompt")
    f(t="in", id=9, parent=8, attr="literal", kind="literal", name="after", grammar="")
    tok(f, 9, 8, "after", k="prompt")
    f.finish()
    role, inner, after = f.of(NodeOpen)
    assert role.kind == "role" and role.name == "user"
    assert inner.parent_id == role.node_id and inner.base_id == role.node_id
    assert after.parent_id == 0 and after.base_id == role.node_id
    closer = [t for t in f.of(Token) if t.bytes == b"<end_of_turn>\n"][0]
    assert closer.node_id == role.node_id
    assert [b.reason for b in f.of(Backtrack)] == ["healing"]
    role_close = next(c for c in f.of(NodeClose) if c.node_id == role.node_id)
    assert role_close.seq < after.seq
    assert f.text() == "<start_of_turn>user\nHi there<end_of_turn>\nafter"
    assert "branch" not in f.store.tree().render()


def test_a_stateful_function_is_a_program_node_around_its_own():
    f = Feeder()
    last = literal(f, 1, None, "Start", 2)
    f(t="prog", call=1, name="ask", id=last)
    f(t="in", id=5, parent=last, attr="grammar", kind="select", name="inner", grammar="")
    tok(f, 5, last, " yes")
    f(t="prog_end", call=1, id=5, error=False)
    f(t="in", id=7, parent=5, attr="literal", kind="literal", name="!", grammar="")
    tok(f, 7, 5, "!", k="prompt")
    f.finish()
    start, prog, inner, bang = f.of(NodeOpen)
    assert prog.kind == "program" and prog.name == "ask" and prog.base_id == start.node_id
    assert inner.parent_id == prog.node_id and inner.base_id == prog.node_id
    assert bang.parent_id == 0 and bang.base_id == prog.node_id
    assert f.text() == "Start yes!"
    assert "branch" not in f.store.tree().render()


def test_a_program_that_raised_is_closed_with_error():
    f = Feeder()
    f(t="prog", call=1, name="broken", id=None)
    f(t="prog_end", call=1, id=None, error=True)
    f.finish()
    assert [(c.stop_reason) for c in f.of(NodeClose)] == ["error"]


def test_outputs_without_an_input_get_a_node_of_their_own():
    f = Feeder()
    tok(f, 4, 3, "stray")
    f.finish()
    assert len(f.of(NodeOpen)) == 1 and f.of(Token)[0].node_id == f.of(NodeOpen)[0].node_id
    assert f.text() == "stray"


def test_guidance_metrics_make_one_sample_every_four_messages():
    f = Feeder()
    f(t="hello", v=1, guidance="0.3.1", ram_total=8 << 30, gpustat=False)
    f(t="metric", name="cpu", value=0.5)
    f(t="metric", name="ram", value=1.5)
    f(t="metric", name="gpu", value=0.0)
    f(t="metric", name="vram", value=0.0)
    f(t="metric", name="avg latency", value=12.0)
    (m,) = f.of(Metric)
    assert m.cpu == 50.0 and m.ram_used == int(1.5 * (1 << 30)) and m.ram_total == 8 << 30
    assert m.gpus == []  # guidance's 0 for "no GPU seen" is not a GPU at 0 %


def test_a_gpu_sample_only_when_guidance_saw_gpu_memory_in_use():
    f = Feeder()
    f(t="hello", v=1, guidance="0.3.1", ram_total=1, gpustat=True)
    for name, value in (("cpu", 0.1), ("ram", 1.0), ("gpu", 0.75), ("vram", 1024.0)):
        f(t="metric", name=name, value=value)
    (m,) = f.of(Metric)
    (g,) = m.gpus
    assert g.util == 75.0 and g.mem_used == 1 << 30 and g.mem_total == 0 and math.isnan(g.power_w)


def test_a_model_without_probabilities_says_how_to_turn_them_on():
    f = Feeder()
    f(t="model", **{"class": "LlamaCpp"}, model="/m.gguf", engine="LlamaCppEngine", echo=False, probs=False,
      top_k=0, monitoring=True)
    texts = [m.text for m in f.of(Message)]
    assert any("/m.gguf" in t for t in texts)
    assert PROBS_OFF in texts and "echo=True" in PROBS_OFF


def test_the_scripts_lines_are_messages():
    f = Feeder()
    f(t="out", s="stdout", text="hello")
    f(t="out", s="stderr", text="oops \udcff")
    assert [(m.level, m.text) for m in f.of(Message)] == [("stdout", "hello"), ("stderr", "oops ?")]


def test_damaged_lines_make_nothing_and_break_nothing():
    f = Feeder()
    assert f(t="tok") == []  # no id
    assert f(t="nonsense") == []
    assert f(t="in", id=1, parent=None, attr="literal", kind="literal", name="ok", grammar="")
    tok(f, 1, None, "ok", k="prompt")
    f.finish()
    assert f.text() == "ok"


def test_finish_closes_every_open_node_innermost_first():
    f = Feeder()
    f(t="in", id=1, parent=None, attr="role_open", kind="role", name="user", grammar="")
    f(t="prog", call=1, name="p", id=1)
    f(t="in", id=3, parent=1, attr="grammar", kind="gen", name="g", grammar="")
    f.finish("interrupted")
    opened = [o.node_id for o in f.of(NodeOpen)]
    assert [c.node_id for c in f.of(NodeClose)] == opened[::-1]
    assert all(c.stop_reason == "interrupted" for c in f.of(NodeClose))


def test_token_counts_by_kind():
    f = Feeder()
    f(t="in", id=1, parent=None, attr="grammar", kind="gen", name="g", grammar="")
    tok(f, 1, None, "a", k="prompt")
    tok(f, 2, 1, "b", k="generated")
    tok(f, 3, 2, "c", k="forced")
    tok(f, 4, 3, "d", k="generated")
    assert f.conv.token_counts() == {"prompt_tokens": 1, "generated_tokens": 2, "forced_tokens": 1}
