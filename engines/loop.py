"""The instrumented decode loop: llguidance drives, a backend computes logits, events record it all.

One call of :meth:`Engine.run` extends a text with one grammar.  Every change
to the text goes through :meth:`_Call.emit_token` or :meth:`_Call.backtrack`,
which update the text and append the matching event, so the text can always be
rebuilt from the events (tokens minus backtracks).
"""

from __future__ import annotations

import functools
import json
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import llguidance
import numpy as np
from llguidance.numpy import allocate_token_bitmask

from tracing import Alt, Backtrack, Capture, Token, TokenKind

from .backend import Backend, common_prefix
from .errors import EngineError, GrammarError, one_line
from .grammar import INTERNAL_CAPTURE, LIST_APPEND, Lowered, _lark_regex
from .session import Session
from .stats import RowStats, analyse, mask_from_bitmask, sample, top_k_allowed
from .token_stats import RowCopy, StatsWorker

_STOP_REASONS = {
    "EndOfSentence": "eos", "MaxTokensParser": "max_tokens", "MaxTokensTotal": "max_tokens",
    "NoExtension": "grammar", "NoExtensionBias": "grammar",
}
NAN = float("nan")


@dataclass
class Options:
    """The engine switches (as in the seed): all on by default."""

    top_k: int = 5
    token_stats: bool = True  # probabilities and top-k per token
    enable_backtrack: bool = True
    enable_ff_tokens: bool = True
    monitoring: bool = True
    temperature: float = 0.0  # greedy unless a gen() asks for a temperature
    seed: int | None = None
    top_p: float = 1.0  # nucleus sampling (guidance's sampling_params); no effect when greedy
    min_p: float = 0.0
    sample_top_k: int = 0  # sample among the k best allowed tokens only (0: all)


@dataclass
class CallResult:
    text: bytes  # the whole new text
    captures: list[tuple[str, str, float]] = field(default_factory=list)  # name, value, log-prob
    stop_reason: str = ""
    generated: int = 0
    forced: int = 0
    log_prob: float = 0.0  # of the kept generated and forced tokens of the call


_byte_tokenizer = None
_byte_lock = threading.Lock()


def _byte_matcher(pattern: str) -> "llguidance.LLMatcher":
    """A matcher for ``pattern`` alone over bytes (llguidance's own regex semantics, no model vocabulary)."""
    global _byte_tokenizer
    with _byte_lock:
        if _byte_tokenizer is None:
            _byte_tokenizer = llguidance.LLTokenizer("byte")
    return llguidance.LLMatcher(_byte_tokenizer, f"start: /{_lark_regex(pattern)}/\n", log_level=0)


@functools.lru_cache(maxsize=1024)
def regex_is_empty(pattern: str) -> bool:
    """True when no text at all matches ``pattern`` (``[^\\s\\S]``, ``[a&&b]``...): llguidance stops at once."""
    m = _byte_matcher(pattern)
    if m.is_error():
        return False  # an invalid regex: building the grammar reports it
    m.compute_bitmask()  # the matcher finds out it is stuck only when asked for its first mask
    return m.is_stopped() and not m.is_accepting()


def regex_matches(pattern: str, value: bytes) -> bool:
    """Whether ``value`` as a whole matches ``pattern``."""
    m = _byte_matcher(pattern)
    return not m.is_error() and (not value or m.consume_tokens(list(value))) and m.is_accepting()


class Engine:
    """A backend plus options plus the session its events go to.

    Models derived from one base share their engine, and engines on the same weights share the
    backend (one KV cache, one llama context): a call holds the backend's lock from its first
    tokenisation to its last logits, so programs on several threads take turns instead of
    corrupting each other's cache (or llama.cpp's heap).
    """

    def __init__(self, backend: Backend, session: Session, options: Options | None = None) -> None:
        self.backend = backend
        self.session = session
        self.options = options or Options()
        self._rng = None
        self._bitmask = None
        if self.options.monitoring:
            session.start_monitoring()

    @property
    def rng(self) -> np.random.Generator:
        """Made at the first draw: ``numpy.random`` costs ~10 ms to import, and greedy runs never draw."""
        if self._rng is None:
            self._rng = np.random.default_rng(self.options.seed)
        return self._rng

    def emit_prompt(self, node_id: int, pos: int, data: bytes) -> None:
        """Record program-supplied text as prompt tokens at byte offset ``pos``."""
        if not data:
            return
        store = self.session.store
        with self.backend.lock:
            ids = self.backend.tokenize(data, add_bos=False)
            pieces = [self.backend.token_bytes(i) for i in ids]
        if b"".join(pieces) != data:  # a tokenizer that does not round-trip: keep the bytes exact
            ids, pieces = [ids[0] if ids else 0], [data]
        for tid, b in zip(ids, pieces):
            store.append(Token(node_id=node_id, pos=pos, id=tid, bytes=b, kind=TokenKind.PROMPT))
            pos += len(b)

    def run(self, text: bytes, lark: "str | Lowered", node_id: int, *,
            stop_check: Callable[[bytes], int | None] | None = None,
            temperature: float | None = None, top_p: float | None = None) -> CallResult:
        """Extend ``text`` under the grammar ``lark``; returns the new text and captures.

        ``lark`` is Lark text, or a :class:`~engines.grammar.Lowered` grammar, which also
        carries the checks for regexes that can never match or are cut by ``max_tokens``.
        ``temperature`` applies where llguidance reports none (it does not for
        every terminal); otherwise the engine's default (greedy) does.
        """
        lowered = lark if isinstance(lark, Lowered) else Lowered(lark)
        with self.backend.lock:
            call = _Call(self, text, lowered, node_id, stop_check)
            if temperature is not None:
                call.temperature = temperature
            if top_p is not None:
                call.top_p = min(call.top_p, top_p)
            return call.run()

    def bitmask(self, n_vocab: int) -> np.ndarray:
        if self._bitmask is None or self._bitmask.shape[1] * 32 < n_vocab:
            self._bitmask = allocate_token_bitmask(1, n_vocab)
        return self._bitmask


class _Call:
    """State of one grammar call."""

    def __init__(self, engine: Engine, text: bytes, lowered: Lowered, node_id: int,
                 stop_check: Callable[[bytes], int | None] | None) -> None:
        self._start_text(engine, text, node_id, stop_check)
        self.ids: list[int] = []
        self.lens: list[int] = []  # byte length of each id in self.ids, as it is in self.text
        self.pending: list[int] = []  # forced tokens whose probabilities wait for the next logits
        self.temperature = self.opts.temperature
        self.top_p = self.opts.top_p
        tok = self.backend.ll_tokenizer()
        try:
            # llguidance cannot backtrack without fast-forward tokens: the ff switch turns both off.
            self.interp = llguidance.LLInterpreter(
                tok, lowered.lark, enable_backtrack=self.opts.enable_backtrack and self.opts.enable_ff_tokens,
                enable_ff_tokens=self.opts.enable_ff_tokens, log_level=0)
        except (ValueError, RuntimeError) as e:
            raise GrammarError(f"invalid grammar: {one_line(e)}") from None
        # llguidance accepts a regex whose language is empty and then stops without a word: refuse it.
        for pattern, what in lowered.regexes:
            if regex_is_empty(pattern):
                raise GrammarError(one_line(f"{what}: the regex {pattern!r} can never match (no text matches it)"))
        self.lowered = lowered
        self.n_vocab = tok.vocab_size
        # A sampled token's statistics are computed, and the token emitted, by a job: inline, or on a
        # worker thread during the next forward pass (engines.token_stats); the loop waits for that
        # job before it touches the text again.
        self._deferred = None
        self._row_copy = RowCopy()

    def _start_text(self, engine: Engine, text: bytes, node_id: int,
                    stop_check: Callable[[bytes], int | None] | None) -> None:
        """The state every kind of call keeps about the text it extends and the events it records."""
        self.engine = engine
        self.backend = engine.backend
        self.opts = engine.options
        self.store = engine.session.store
        self.node_id = node_id
        self.stop_check = stop_check
        self.text = bytearray(text)
        self.start_len = len(text)
        self.spans: list[tuple[int, int, float]] = []  # (pos, len, log-prob) of kept sampled/forced tokens
        self.result = CallResult(b"")
        self.raw_captures: list[tuple[str, bytes, int]] = []  # (name, value, where it starts)

    # -- text changes, each mirrored by an event ---------------------------
    def emit_token(self, tid: int, kind: TokenKind, *, prob: float = NAN, prob_raw: float = NAN,
                   top: list[Alt] | None = None, latency_us: int = 0, mask_us: int = 0, allowed: int = -1,
                   top_allowed: list[Alt] | None = None) -> None:
        self.record_token(Token(node_id=self.node_id, pos=len(self.text), id=tid, bytes=self.backend.token_bytes(tid),
                                kind=kind, prob=prob, prob_raw=prob_raw, top=top or [], latency_us=latency_us,
                                mask_us=mask_us, allowed=allowed, top_allowed=top_allowed or []), prob)

    def record_token(self, tok: Token, p: float) -> None:
        """Append ``tok`` to the text; ``p`` is the probability its captures' log-probabilities count."""
        self.store.append(tok)
        if tok.kind != TokenKind.PROMPT:
            lp = math.log(p) if p > 0 else (NAN if p != p else -math.inf)
            self.spans.append((len(self.text), len(tok.bytes), lp))
            if tok.kind == TokenKind.GENERATED:
                self.result.generated += 1
            else:
                self.result.forced += 1
        self.text += tok.bytes

    def backtrack(self, n_bytes: int, n_tokens: int, reason: str) -> None:
        if n_bytes <= 0 and n_tokens <= 0:
            return
        pos = len(self.text) - n_bytes
        removed = bytes(self.text[pos:])
        self.store.append(Backtrack(node_id=self.node_id, n_tokens=n_tokens, bytes=removed, reason=reason, pos=pos))
        del self.text[pos:]
        while self.spans and self.spans[-1][0] >= pos:
            self.spans.pop()

    # -- the loop -----------------------------------------------------------
    def _alts(self, st, allowed) -> list[Alt]:
        tb = self.backend.token_bytes
        return [Alt(int(i), tb(int(i)), st.prob_raw(int(i)), bool(allowed is not None and not allowed[i]))
                for i in st.top_ids]

    def _allowed_alts(self, st, allowed, top: list[Alt]) -> list[Alt]:
        """The top-k after the mask, only when the mask removed one of ``top`` (else ``top`` is it)."""
        if allowed is None or not any(a.masked for a in top):
            return []
        tb = self.backend.token_bytes
        return [Alt(int(i), tb(int(i)), st.prob_masked(int(i)), False)
                for i in top_k_allowed(st, allowed, self.opts.top_k)]

    def _emit_sampled(self, row: np.ndarray, allowed: np.ndarray | None, tid: int, row_max: float,
                      fields: dict) -> None:
        """Emit a sampled token with the statistics that need full passes over its row (on the worker)."""
        st = analyse(row, allowed, self.opts.top_k, row_max)
        top = self._alts(st, allowed)
        self.emit_token(tid, TokenKind.GENERATED, prob=st.prob_masked(tid), prob_raw=st.prob_raw(tid), top=top,
                        top_allowed=self._allowed_alts(st, allowed, top), **fields)

    def _emit_deferred(self) -> None:
        """Wait until the worker has emitted the last sampled token (usually long done)."""
        if self._deferred is not None:
            job, self._deferred = self._deferred, None
            job.result()

    def _choose(self, st, allowed, temperature: float) -> int:
        """The next token (a fork replays recorded choices here first)."""
        return sample(st, allowed, temperature, lambda: self.engine.rng, top_p=self.top_p, min_p=self.opts.min_p,
                      top_k=self.opts.sample_top_k)

    def _flush_pending(self, rows: np.ndarray, step_us: int) -> None:
        """Emit the forced tokens waiting for their logits rows (the last rows predict the last tokens).

        A backend returns at most one batch of rows: the first tokens of a forced
        run longer than that have no row, and their probability stays unknown.
        """
        share = step_us // max(1, len(rows))
        missing = len(self.pending) - len(rows)
        for j, tid in enumerate(self.pending):
            if self.opts.token_stats and j >= missing:
                st = analyse(rows[j - missing], None, self.opts.top_k)
                top = [Alt(a.id, a.bytes, a.prob, a.id != tid) for a in self._alts(st, None)]
                # The forced token is the only one allowed: after the mask it has p 1.
                only = [Alt(tid, self.backend.token_bytes(tid), 1.0, False)] if any(a.masked for a in top) else []
                self.emit_token(tid, TokenKind.FORCED, prob=1.0, prob_raw=st.prob_raw(tid), top=top,
                                latency_us=share, allowed=1, top_allowed=only)
            else:
                self.emit_token(tid, TokenKind.FORCED, prob=1.0, latency_us=share, allowed=1)
        self.pending = []

    def _append_ids(self, new: list[int]) -> None:
        self.ids.extend(new)
        self.lens.extend(len(self.backend.token_bytes(t)) for t in new)

    def _drop_ids(self, n: int) -> int:
        """Remove the last n ids; returns how many text bytes they covered."""
        if n <= 0:
            return 0
        nb = sum(self.lens[-n:])
        del self.ids[-n:]
        del self.lens[-n:]
        return nb

    def run(self) -> CallResult:
        backend, opts, interp = self.backend, self.opts, self.interp
        session = self.engine.session
        prompt = backend.tokenize(bytes(self.text), add_bos=backend.bos_id is not None)
        try:
            healed = interp.process_prompt(prompt)
        except (ValueError, RuntimeError) as e:
            raise EngineError(f"llguidance: {one_line(e)}") from None
        bitmask = self.engine.bitmask(self.n_vocab)
        t0 = time.perf_counter_ns()
        first = self._compute_mask(bitmask)
        first_us = (time.perf_counter_ns() - t0) // 1000
        if first.get("stop") and not interp.is_accepting():
            # Stopped before the first token, and not in an accepting state: no text satisfies the grammar.
            raise GrammarError(f"the grammar can never match: no text satisfies it "
                               f"(llguidance stopped with {interp.stop_reason()} before the first token)")
        self._append_ids(prompt)
        if prompt and prompt[0] == backend.bos_id:
            self.lens[0] = 0  # BOS is not part of the text
        keep = common_prefix(prompt, healed)
        if keep < len(prompt):  # token healing: the last prompt token(s) are generated again
            n = len(prompt) - keep
            self.backtrack(self._drop_ids(n), n, "healing")
        self.pending = list(healed[keep:])  # the grammar's forced prefix
        self._append_ids(self.pending)
        t_step = time.perf_counter_ns()
        stop_reason = ""
        try:
            while True:
                session.check_cancelled()
                t0 = time.perf_counter_ns()
                if first is not None:  # computed above, before any event
                    info, first = first, None
                    t0 -= first_us * 1000
                else:
                    info = self._compute_mask(bitmask)
                mask_us = (time.perf_counter_ns() - t0) // 1000
                if info.get("stop"):
                    self._emit_deferred()
                    self._progress(info)
                    if not interp.is_accepting():
                        session.warn(one_line(f"the grammar stopped before it could match: no token can continue "
                                              f"{bytes(self.text[self.start_len:])[-40:]!r} "
                                              f"(llguidance: {interp.stop_reason()})"))
                    break
                rows = backend.logits(self.ids, len(self.pending) + 1)
                decode_us = (time.perf_counter_ns() - t0) // 1000 - mask_us
                self._emit_deferred()
                self._progress(info)
                self._flush_pending(rows[:-1], decode_us)
                allowed, n_allowed = mask_from_bitmask(bitmask, self.n_vocab)
                if n_allowed == 0:
                    raise EngineError("the grammar allows no token here (llguidance returned an empty mask)")
                row = rows[-1]
                row = row[:len(allowed)] if allowed is not None and len(row) > len(allowed) else row
                temperature = info.get("temperature") or self.temperature
                light = RowStats.light(row)
                tid = self._choose(light, allowed, temperature)
                now = time.perf_counter_ns()
                fields = dict(latency_us=(now - t_step) // 1000, mask_us=mask_us, allowed=n_allowed)
                if opts.token_stats:
                    inline = StatsWorker.runs_inline(backend)
                    row = row if inline else self._row_copy(row)
                    self._deferred = StatsWorker.submit(self._emit_sampled, row, allowed, tid, light.max, fields,
                                                        inline=inline)
                else:
                    self.emit_token(tid, TokenKind.GENERATED, **fields)
                t_step = now
                try:
                    bt, ff = interp.commit_token(tid)
                except (ValueError, RuntimeError) as e:  # e.g. the stop= panic in llguidance 1.9.1
                    raise EngineError(f"llguidance: {one_line(e)}") from None
                self._append_ids([tid])
                is_eos = tid in backend.eos_ids
                if is_eos and ff[:1] == [tid]:  # llguidance 1.9.1 echoes an accepted EOS: it is no text
                    ff = ff[1:]
                if bt == 0 and ff[:1] == [tid] and not is_eos:
                    self.pending = list(ff[1:])
                    self._append_ids(self.pending)
                else:  # the sampled token is hidden, maybe with earlier ones: a backtrack
                    self._emit_deferred()
                    reason = "eos" if is_eos else ("stop" if not ff else "grammar")
                    self.backtrack(self._drop_ids(bt + 1), bt + 1, reason)
                    self.pending = list(ff)
                    self._append_ids(self.pending)
                if self.stop_check is not None and not self.pending:
                    self._emit_deferred()
                    cut = self.stop_check(bytes(self.text[self.start_len:]))
                    if cut is not None:
                        self._cut(self.start_len + cut)
                        stop_reason = "tool"
                        break
        finally:  # a token chosen before an error or a cancel is still recorded
            self._emit_deferred()
        if self.pending:  # forced tokens at the very end still get their probabilities
            t0 = time.perf_counter_ns()
            rows = backend.logits(self.ids, len(self.pending) + 1)
            self._flush_pending(rows[:-1], (time.perf_counter_ns() - t0) // 1000)
        self.result.stop_reason = stop_reason or _STOP_REASONS.get(interp.stop_reason(), interp.stop_reason())
        self.result.text = bytes(self.text)
        self._finish_captures(complete=not stop_reason and interp.is_accepting())
        return self.result

    def _compute_mask(self, bitmask: np.ndarray) -> dict:
        try:
            return json.loads(self.interp.unsafe_compute_mask_ptr(bitmask.ctypes.data, bitmask.nbytes))
        except (ValueError, RuntimeError) as e:
            raise EngineError(f"llguidance: {one_line(e)}") from None

    def _cut(self, end: int) -> None:
        """Drop whole tokens past ``end``, then re-add the part of the last one before ``end`` as forced."""
        n = covered = 0
        while len(self.text) - covered > end and n < len(self.ids):
            n += 1
            covered += self.lens[-n]
        kept = bytes(self.text[len(self.text) - covered:end])
        self.backtrack(self._drop_ids(n), n, "tool")
        if kept:
            self.pending = self.backend.tokenize(kept, add_bos=False)
            self._append_ids(self.pending)

    def _progress(self, info: dict) -> None:
        for item in info.get("progress", ()):
            obj = item.get("object")
            if obj == "capture":
                value = bytes.fromhex(item.get("hex", ""))
                # Where the value starts tells a list item's growing report from the next item.
                start = self.text.rfind(value) if value else len(self.text)
                self.raw_captures.append((item["name"], value, start))

    def _finish_captures(self, complete: bool) -> None:
        """Capture events with log-probabilities summed over the tokens that produced them.

        ``complete``: the grammar ran to an accepting end, so every capture on every path matched.
        """
        out = bytes(self.text)
        # llguidance reports a capture again as it grows (first empty): the last report wins.
        # A list-append capture (``__LIST_APPEND:name``) keeps one value per item: a report that
        # starts where the previous one did is that item growing.
        latest: dict[str, bytes] = {}
        items: dict[str, list[tuple[bytes, int]]] = {}
        for name, value, start in self.raw_captures:
            if name.startswith(LIST_APPEND):
                got = items.setdefault(name[len(LIST_APPEND):], [])
                if got and got[-1][1] == start:
                    got[-1] = (value, start)
                else:
                    got.append((value, start))
            else:
                latest[name] = value
        if complete:
            # llguidance never reports a capture that matched empty text without a lexeme being
            # scanned (gen(max_tokens=0), select([""]), regex("")): it matched all the same.
            for name in sorted(self.lowered.always - latest.keys() - items.keys()):
                latest[name] = b""
        for check in self.lowered.cut_checks:
            value = latest.get(check.capture)
            if value is not None and not regex_matches(check.pattern, value):
                # llguidance ends a lexeme whose budget ran out wherever it is, and reports no reason.
                what = f"gen {check.name!r}" if check.name else "gen(regex=...)"
                self.engine.session.warn(one_line(
                    f"{what} was cut by max_tokens={check.max_tokens} before it matched its regex "
                    f"{check.pattern!r}; kept the partial text {value.decode('utf-8', 'replace')!r}"))
                self.result.stop_reason = "max_tokens"
        for budget in self.lowered.budgets:
            # llguidance ends a part whose token budget ran out like any other end: count its tokens.
            value = latest.get(budget.capture)
            if value is None or self.result.stop_reason not in ("grammar", ""):
                continue
            start = out.rfind(value, max(0, self.start_len - 16)) if value else -1
            used = sum(1 for pos, n, _ in self.spans if pos < start + len(value) and pos + n > start) \
                if start >= 0 else 0
            if used >= budget.max_tokens:
                self.result.stop_reason = "max_tokens"
        self.result.log_prob = sum(l for _, _, l in self.spans if l == l)
        found = [(n, v, False) for n, v in latest.items()]
        found += [(n, v, True) for n, got in items.items() for v, _ in got]
        for name, value, append in found:
            if name.startswith(INTERNAL_CAPTURE):
                continue
            # The value may begin in the healed prompt bytes, just before this call's own text.
            start = out.rfind(value, max(0, self.start_len - 16)) if value else -1
            lp = 0.0
            if start >= 0:
                a, b = start, start + len(value)
                lp = sum(l for pos, n, l in self.spans if pos < b and pos + n > a)
            self.result.captures.append((name, value.decode("utf-8", errors="replace"), lp))
            self.store.append(Capture(node_id=self.node_id, name=name, append=append,
                                      value=value.decode("utf-8", errors="replace"), log_prob=lp))
