r"""The event contract between engines, the trace store, trace files and the UI.

Every event is a tagged msgspec Struct with a ``seq`` (assigned by the store,
dense and increasing) and ``t_us`` (microseconds on a monotonic clock since
the store was created).  Probabilities are floats and may be NaN (unknown);
NaN survives every round trip because the file stores IEEE floats, never text.

Text fields are str, and a trace file stores them as UTF-8.  A string that is
not valid Unicode never stops the writer: what a lone surrogate stands for is
written instead (:func:`safe_text`), shown the way token bytes are
(:func:`display_text`).  Surrogate-escaped bytes (U+DC80 to U+DCFF, what
``os.listdir`` or ``sys.argv`` give for a file name that is not UTF-8) become
their bytes again: bytes that make a UTF-8 character are that character, and
any other byte shows as ``<0xNN>``; any other lone surrogate shows as
``\udXXX``.  So ``"caf\udcc3\udca9 \udcff \ud800"`` is recorded as
``"café <0xFF> \ud800"`` (a backslash, then ``ud800``).
"""

from __future__ import annotations

import codecs
import enum
from typing import Union

import msgspec

FORMAT_VERSION = 4  # 4: after-mask alternatives and probability kinds in blocks; 3 (checksums), 2 and 1 still read

_Bytes = bytes  # field types below, since fields named `bytes` shadow the builtin


class TokenKind(enum.IntEnum):
    PROMPT = 0  # text the program supplied
    GENERATED = 1  # sampled by the model under the grammar mask
    FORCED = 2  # fast-forwarded by the grammar, no sampling


class Event(msgspec.Struct, tag_field="type", kw_only=True, omit_defaults=True):
    seq: int = -1
    t_us: int = -1


class RunStart(Event, tag="run_start", kw_only=True):
    script: str = ""
    argv: list[str] = []
    model: str = ""
    backend: str = ""
    info: dict[str, str] = {}
    wall_time: float = 0.0  # time.time() at start, for display only


class RunEnd(Event, tag="run_end", kw_only=True):
    status: str = "done"  # done | error | interrupted
    error: str = ""  # one-line message
    traceback: str = ""  # the user's frames, formatted
    prompt_tokens: int = 0
    generated_tokens: int = 0
    forced_tokens: int = 0


class NodeOpen(Event, tag="node_open", kw_only=True):
    """A node of the program tree.

    ``parent_id`` is the structural container (0 is the run root).
    ``base_id`` is the node whose end state this one continues from (0: the
    empty state); a base that is not the latest state is a branch.
    """

    node_id: int
    parent_id: int = 0
    base_id: int = 0
    kind: str = ""  # program | role | gen | select | regex | json | literal | tool | tool_call
    name: str = ""
    grammar: str = ""  # the Lark text this node lowered to, if any


class NodeClose(Event, tag="node_close", kw_only=True):
    node_id: int
    stop_reason: str = ""


class ProbKind(enum.IntEnum):
    """What a token's probabilities are (remote servers give one number, of one kind)."""

    LOCAL = 0  # computed here from the logits: ``prob`` after the mask, ``prob_raw`` before it
    BEFORE_MASK = 1  # the server's number is before the grammar mask: in ``prob_raw``
    AFTER_MASK = 2  # after the mask, before sampling settings: in ``prob``
    AFTER_SAMPLING = 3  # after the mask and temperature/top-p: in ``prob``
    UNKNOWN = 4  # the server does not say: in ``prob``


class Alt(msgspec.Struct, array_like=True, gc=False):
    """One alternative of a token.

    In ``Token.top`` alternatives are ranked by probability before the grammar
    mask (``prob`` before the mask, ``masked`` says whether the grammar ruled
    it out); in ``Token.top_allowed`` they are the allowed tokens ranked after
    the mask (``prob`` renormalised over the allowed set, ``masked`` False).
    """

    id: int  # -1 when the engine does not know ids (a bridged guidance run)
    bytes: _Bytes
    prob: float
    masked: bool  # True when the grammar ruled this token out


class Token(Event, tag="token"):
    # Positional fields (id, bytes first): a trace reader builds a block of
    # tokens with one C-level map(Token, *columns) instead of a Python call each.
    id: int  # -1 when unknown (guidance's trace messages carry text, not ids)
    bytes: _Bytes
    node_id: int = 0
    pos: int = 0  # byte offset in the model's text where this token starts
    kind: TokenKind = TokenKind.GENERATED
    prob: float = float("nan")  # after the grammar mask (what was sampled from)
    prob_raw: float = float("nan")  # before the mask
    top: list[Alt] = []
    latency_us: int = 0  # forward pass + sampling for this token
    mask_us: int = 0  # grammar mask computation, -1 when unknown
    allowed: int = -1  # size of the allowed set, -1 when unknown
    # The top-k after the mask; empty when the mask removed none of ``top`` (then it is ``top``).
    top_allowed: list[Alt] = []  # stored only when ``top`` has a masked alternative
    prob_kind: ProbKind = ProbKind.LOCAL

    @property
    def text(self) -> str:
        return display_text(self.bytes)

    def after_mask(self) -> list[Alt]:
        """The alternatives after the grammar mask, best first, with renormalised probabilities."""
        if self.top_allowed:
            return self.top_allowed
        if any(a.masked for a in self.top):
            return []  # not recorded (an older trace, or a remote server)
        # The mask removed none of the top-k, so the ranking is the same; the probabilities
        # scale by the chosen token's after/before ratio (1 when nothing was masked at all).
        scale = self.prob / self.prob_raw if self.prob_raw > 0 and self.prob == self.prob else 1.0
        if abs(scale - 1.0) < 1e-6:
            return self.top
        return [Alt(a.id, a.bytes, min(1.0, a.prob * scale), False) for a in self.top]


class Backtrack(Event, tag="backtrack", kw_only=True):
    """The last ``n_tokens`` tokens (``bytes`` of text) were taken back.

    ``pos`` is where the removed text started (-1: at the end of the current
    text), which keeps a backtrack right even after a branch switch.
    """

    node_id: int = 0
    n_tokens: int
    bytes: _Bytes
    reason: str = ""  # healing | grammar | tool | stop | eos
    pos: int = -1


class Capture(Event, tag="capture", kw_only=True):
    node_id: int = 0
    name: str
    value: str
    log_prob: float = float("nan")
    append: bool = False


class GpuSample(msgspec.Struct, array_like=True, gc=False):
    index: int
    util: float  # percent
    mem_used: int  # bytes
    mem_total: int
    power_w: float


class Metric(Event, tag="metric", kw_only=True):
    cpu: float  # percent of one core summed over cores / ncores, 0-100
    ram_used: int
    ram_total: int
    proc_rss: int = 0
    gpus: list[GpuSample] = []


class Message(Event, tag="message", kw_only=True):
    """Free text from the engine or runner: warnings, stdout of the script."""

    level: str = "info"
    text: str


AnyEvent = Union[RunStart, RunEnd, NodeOpen, NodeClose, Token, Backtrack, Capture, Metric, Message]
EVENT_TYPES = (RunStart, RunEnd, NodeOpen, NodeClose, Token, Backtrack, Capture, Metric, Message)


def _hex_escape(err: UnicodeDecodeError) -> tuple[str, int]:
    return "".join(f"<0x{b:02X}>" for b in err.object[err.start:err.end]), err.end


# One pass of the UTF-8 decoder; bytes that are not part of a valid character
# become <0xNN>.  (Retrying every sub-slice took cubic time on binary data.)
codecs.register_error("tracing.hex_escape", _hex_escape)


def _surrogate_escape(err: UnicodeError) -> tuple[bytes, int]:
    if not isinstance(err, UnicodeEncodeError):
        raise err
    out = bytearray()
    for ch in err.object[err.start:err.end]:
        o = ord(ch)
        out += bytes((o - 0xDC00,)) if 0xDC80 <= o <= 0xDCFF else f"\\u{o:04x}".encode()
    return bytes(out), err.end


codecs.register_error("tracing.surrogates", _surrogate_escape)


def safe_text(s: str) -> str:
    r"""``s`` if it is valid Unicode; else with each lone surrogate replaced by what it stands for.

    Surrogate-escaped bytes (U+DC80-U+DCFF) are their bytes again, shown as
    :func:`display_text` shows token bytes (a UTF-8 character, else
    ``<0xNN>``); any other lone surrogate shows as ``\udXXX``."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "tracing.surrogates").decode("utf-8", "tracing.hex_escape")


def display_text(data: bytes) -> str:
    """Text for a token's bytes; an incomplete UTF-8 sequence shows as <0xNN> escapes."""
    return bytes(data).decode("utf-8", "tracing.hex_escape")
