"""The bridge's lines (see the package docstring) as our trace events.

Pure: :meth:`Converter.feed` takes one decoded line and returns the events it makes, without
timestamps (:class:`~guidance_tui.bridge.bridge_run.BridgeRun` stamps them with the line's ``ts``).

guidance's trace is a tree of *model states*, not of program nodes: every ``lm + x`` makes a copy
whose id is the parent of the input node update (a literal, a grammar, a role opener or closer)
that follows; each output (a token, a backtrack, a capture) after the first gets a new id whose
parent is the previous one.  So the converter keeps, for every guidance id it has seen, the state
it stands for: the node of ours whose end state it is, the length of its text, the container new
nodes go in, and the role blocks open in it.  An input opens one node of ours (its kind and name
from guidance's AST node, its Lark grammar), based on the node of its parent's state: reusing an
older model is a branch, exactly as our own engine records it.  Role openers open a ``role``
container that holds the opener's tokens and stays open until the closer's tokens are in, as our
engine does; a stateful ``@guidance`` function is a ``program`` container.
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass

from tracing import Alt, Backtrack, Capture, GpuSample, Message, Metric, NodeClose, NodeOpen, ProbKind, Token, TokenKind

NAN = float("nan")
UNKNOWN_ID = -1  # guidance's trace carries no token ids
UNKNOWN_US = -1  # ...nor mask times
KINDS = {"prompt": TokenKind.PROMPT, "generated": TokenKind.GENERATED, "forced": TokenKind.FORCED}
GIB, MIB = 1 << 30, 1 << 20

PROBS_OFF = (
    "guidance computes no token probabilities for this model, so probabilities and top-k show as "
    "unknown. For models.LlamaCpp and models.Transformers pass echo=True: guidance then turns on "
    "enable_token_probabilities and enable_top_k (top_k=K sets how many alternatives, default 5). "
    "In a terminal echo=True prints nothing.")
TOP_K_OFF = ("guidance computes probabilities but no top-k alternatives for this model "
             "(enable_top_k=False): alternatives and masked flags show as unknown.")
MONITORING_OFF = "enable_monitoring=False: guidance samples no CPU, RAM or GPU use for this run."


@dataclass(frozen=True)
class _State:
    """What one guidance trace id stands for."""

    node: int  # the node of ours whose end state this is: a new node's base
    length: int  # bytes of text
    container: int  # where new nodes go
    roles: tuple[int, ...] = ()  # role nodes open in this state, innermost last


EMPTY = _State(0, 0, 0)


def _bytes(s) -> bytes:
    try:
        return base64.b64decode(s or "", validate=True)
    except (binascii.Error, ValueError, TypeError):
        return b""


def _float(x) -> float:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else NAN


def _text(x) -> str:
    s = x if isinstance(x, str) else ("" if x is None else str(x))
    return s.encode("utf-8", "replace").decode("utf-8")  # a lone surrogate would not encode


class Converter:
    """Feed it the bridge's lines in order; :meth:`finish` closes what is still open."""

    def __init__(self) -> None:
        self.known: dict[int | None, _State] = {}
        self.next_node = 1
        self.state_node = 0  # the store's current state: the last node opened or closed
        self.text_len = 0  # length of the store's current text
        self.target: int | None = None  # the node outputs go to
        self.target_closes = False  # a segment: closed at the next input
        self.target_tokens = 0
        self.pending_roles: list[int] = []  # roles whose closer ran: closed at the next input
        self.open: list[int] = []  # open nodes, in opening order
        self.parent_of: dict[int, int] = {}
        self.programs: dict[int, tuple[int, int | None, _State | None]] = {}
        self.counts = {TokenKind.PROMPT: 0, TokenKind.GENERATED: 0, TokenKind.FORCED: 0}
        self.hello: dict | None = None
        self.end: dict | None = None  # the child's end line
        self.models: list[dict] = []
        self._metric: dict[str, float | None] = {}
        self._out: list = []

    # -- the store's state machine, mirrored ----------------------------------------------------
    def _open(self, kind: str, name: str, grammar: str, base: _State, parent: int | None = None) -> int:
        node = self.next_node
        self.next_node += 1
        parent = base.container if parent is None else parent
        self._out.append(NodeOpen(node_id=node, parent_id=parent, base_id=base.node, kind=kind, name=name,
                                  grammar=grammar))
        self.open.append(node)
        self.parent_of[node] = parent
        self.state_node = node
        self.text_len = base.length
        return node

    def _close(self, node: int, stop_reason: str = "") -> None:
        if node in self.open:
            self.open.remove(node)
            self._out.append(NodeClose(node_id=node, stop_reason=stop_reason))
            self.state_node = node

    def _settle(self, stop_reason: str = "") -> None:
        """Close the segment that took outputs and the roles whose closer ran."""
        if self.target is not None and self.target_closes:
            self._close(self.target, stop_reason)
        for role in self.pending_roles:
            self._close(role)
        self.pending_roles = []
        self.target = None

    def _aim(self, node: int, closes: bool) -> None:
        self.target, self.target_closes, self.target_tokens = node, closes, 0

    def _resync(self, st: _State) -> None:
        """Make the store's current text ``st``'s: an empty node based on it switches the text."""
        if self.state_node != st.node or self.text_len != st.length:
            self._close(self._open("literal", "", "", st))

    def _state(self, gid, parent) -> _State:
        st = self.known.get(gid) if gid is not None else None
        if st is None:
            st = self.known.get(parent, EMPTY)  # None: a fresh model (or a program's, see _program)
        return st

    # -- lines -------------------------------------------------------------------------------------
    def feed(self, line: dict) -> list:
        """The events one line makes (a malformed line makes none)."""
        self._out = []
        handler = getattr(self, "_on_" + str(line.get("t")), None)
        if handler is not None:
            try:
                handler(line)
            except (KeyError, TypeError, ValueError, AttributeError):
                pass  # a damaged line: what it made so far stands
        out, self._out = self._out, []
        return out

    def _on_hello(self, line: dict) -> None:
        self.hello = line
        version = str(line.get("guidance", ""))
        if version and not version.startswith("0.3."):
            self._out.append(Message(level="warning", text=f"the guidance bridge is made for guidance 0.3.x; "
                                                           f"this is guidance {version}"))

    def _on_model(self, line: dict) -> None:
        self.models.append(line)
        what = line.get("model") or ""
        engine = line.get("engine")
        text = f"guidance model: {line.get('class', '?')}" + (f" {what}" if what else "")
        if engine:
            text += f" (engine {engine}, echo={bool(line.get('echo'))}, top_k={line.get('top_k', 0)})"
        self._out.append(Message(level="info", text=text))
        if engine:
            if not line.get("probs"):
                self._out.append(Message(level="warning", text=PROBS_OFF))
            elif not line.get("top_k"):
                self._out.append(Message(level="warning", text=TOP_K_OFF))
            if line.get("monitoring") is False:
                self._out.append(Message(level="info", text=MONITORING_OFF))

    def _on_in(self, line: dict) -> None:
        gid = line["id"]
        self._settle()
        base = self._state(gid, line.get("parent"))
        attr = line.get("attr")
        name = _text(line.get("name"))
        if attr == "role_open":
            node = self._open("role", name, "", base)
            self._aim(node, closes=False)
            st = _State(node, base.length, node, base.roles + (node,))
        elif attr == "role_close":
            role = base.roles[-1] if base.roles else None
            if role is not None and role in self.open:  # the closer's tokens end the role's node
                self._resync(base)
                self._aim(role, closes=False)
                self.pending_roles.append(role)
                st = _State(role, base.length, self.parent_of.get(role, 0), base.roles[:-1])
            else:  # a role this trace never saw open, or one closed already (a reused model)
                node = self._open("role", name, "", base)
                self._aim(node, closes=True)
                st = _State(node, base.length, base.container, base.roles[:-1])
        else:
            node = self._open(_text(line.get("kind")) or "literal", name, _text(line.get("grammar")), base)
            self._aim(node, closes=True)
            st = _State(node, base.length, base.container, base.roles)
        self.known[gid] = st

    def _output_state(self, line: dict) -> _State:
        """The state an output continues, made current (a node opened for it if need be)."""
        gid = line["id"]
        st = self.known.get(gid)
        if st is None:
            st = self.known.get(line.get("parent"))
        if st is None or st.node != self.target or st.length != self.text_len:
            # outputs with no input we know of, or not continuing the current text (another thread)
            base = st or EMPTY
            self._settle()
            node = self._open("literal", "", "", base)
            self._aim(node, closes=True)
            st = _State(node, base.length, base.container, base.roles)
        return st

    def _advance(self, gid, st: _State) -> None:
        self.known[gid] = _State(st.node, self.text_len, st.container, st.roles)

    def _on_tok(self, line: dict) -> None:
        st = self._output_state(line)
        data = _bytes(line.get("b"))
        kind = KINDS.get(line.get("k"), TokenKind.FORCED)
        p = _float(line.get("p"))
        top = []
        for alt in line.get("top") or ():
            top.append(Alt(UNKNOWN_ID, _bytes(alt[0]), _float(alt[1]), bool(alt[2])))
        if all(math.isnan(a.prob) for a in top):
            top = []  # only the token itself, with no probability: nothing to show
        lat = _float(line.get("lat"))
        forced = kind == TokenKind.FORCED
        self._out.append(Token(
            UNKNOWN_ID, data, node_id=st.node, pos=self.text_len, kind=kind,
            # guidance's probability is before the grammar mask; after it, a forced token had no rival
            prob=1.0 if forced else NAN, prob_raw=p, top=top,
            latency_us=round(lat * 1000) if lat == lat else 0, mask_us=UNKNOWN_US, allowed=1 if forced else -1,
            prob_kind=ProbKind.BEFORE_MASK))
        self.counts[kind] += 1
        self.text_len += len(data)
        self.target_tokens += 1
        self._advance(line["id"], st)

    def _on_text(self, line: dict) -> None:
        st = self._output_state(line)
        data = _bytes(line.get("b"))
        kind = KINDS.get(line.get("k"), TokenKind.FORCED)
        lat = _float(line.get("lat"))
        self._out.append(Token(UNKNOWN_ID, data, node_id=st.node, pos=self.text_len, kind=kind,
                               latency_us=round(lat * 1000) if lat == lat else 0, mask_us=UNKNOWN_US))
        self.counts[kind] += 1
        self.text_len += len(data)
        self.target_tokens += 1
        self._advance(line["id"], st)

    def _on_bt(self, line: dict) -> None:
        st = self._output_state(line)
        data = _bytes(line.get("b"))
        pos = max(0, self.text_len - len(data))
        # guidance says no why; before the first token of an input (one engine call) it can only be
        # token healing at the prompt's end
        reason = "healing" if self.target_tokens == 0 else ""
        self._out.append(Backtrack(node_id=st.node, n_tokens=int(line.get("n") or 0), bytes=data, reason=reason,
                                   pos=pos))
        self.text_len = pos
        self._advance(line["id"], st)

    def _on_cap(self, line: dict) -> None:
        st = self._output_state(line)
        value = line.get("value")
        if value is not None:  # None: guidance resetting a list capture (our contract has no reset)
            self._out.append(Capture(node_id=st.node, name=_text(line.get("name")), value=_text(value),
                                     log_prob=_float(line.get("lp")), append=bool(line.get("append"))))
        self._advance(line["id"], st)

    def _on_other(self, line: dict) -> None:
        st = self._output_state(line)
        self._advance(line["id"], st)

    def _on_prog(self, line: dict) -> None:
        gid = line.get("id")
        self._settle()
        st = self.known.get(gid, EMPTY)
        node = self._open("program", _text(line.get("name")), "", st)
        self.programs[line["call"]] = (node, gid, self.known.get(gid))
        # the function's first node continues its model's state inside the program
        self.known[gid] = _State(node, st.length, node, st.roles)

    def _on_prog_end(self, line: dict) -> None:
        entry = self.programs.pop(line["call"], None)
        if entry is None:
            return
        node, gid, saved = entry
        self._settle()
        ret_id = line.get("id")
        ret = self.known.get(ret_id) if not line.get("error") else None
        if ret is not None:
            self._resync(ret)  # the program's text is the model it returned
        self._close(node, "error" if line.get("error") else "")
        if saved is None:
            self.known.pop(gid, None)
        else:
            self.known[gid] = saved
        if ret is not None:  # the model it returned stands at the program's end
            self.known[ret_id] = _State(node, ret.length, self.parent_of.get(node, 0), ret.roles)

    def _on_metric(self, line: dict) -> None:
        name = line.get("name")
        if name not in ("cpu", "ram", "gpu", "vram"):
            return  # guidance's usage figures (token reduction, consumed, avg latency): no event for them
        if name in self._metric:
            self._flush_metric()
        value = line.get("value")
        self._metric[name] = float(value) if isinstance(value, (int, float)) else None
        if name == "vram":  # the last of guidance's four every half second
            self._flush_metric()

    def _flush_metric(self) -> None:
        m, self._metric = self._metric, {}
        if m.get("cpu") is None and m.get("ram") is None:
            return
        hello = self.hello or {}
        cpu = m.get("cpu")
        ram = m.get("ram")
        gpus = []
        # guidance reports 0 for a GPU it cannot see (no gpustat): only a GPU with memory in use is one
        vram = m.get("vram") or 0.0
        if hello.get("gpustat") and vram > 0:
            gpus.append(GpuSample(0, (m.get("gpu") or 0.0) * 100.0, int(vram * MIB), 0, NAN))
        self._out.append(Metric(cpu=cpu * 100.0 if cpu is not None else NAN,
                                ram_used=int(ram * GIB) if ram is not None else 0,
                                ram_total=int(hello.get("ram_total") or 0), gpus=gpus))

    def _on_out(self, line: dict) -> None:
        self._out.append(Message(level=_text(line.get("s")) or "stdout", text=_text(line.get("text"))))

    def _on_msg(self, line: dict) -> None:
        self._out.append(Message(level=_text(line.get("level")) or "info", text=_text(line.get("text"))))

    def _on_end(self, line: dict) -> None:
        self.end = line

    # -- the end -------------------------------------------------------------------------------------
    def finish(self, status: str = "done") -> list:
        """Close every node still open (innermost first); the events."""
        self._out = []
        reason = "" if status == "done" else status
        self._settle(reason)
        for node in reversed(list(self.open)):
            self._close(node, reason)
        out, self._out = self._out, []
        return out

    def token_counts(self) -> dict[str, int]:
        return {"prompt_tokens": self.counts[TokenKind.PROMPT], "generated_tokens": self.counts[TokenKind.GENERATED],
                "forced_tokens": self.counts[TokenKind.FORCED]}
