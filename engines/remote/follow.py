"""One grammar call on a remote server: the request, then the local matcher following its stream.

The server generates the node's whole continuation; the tokens it streams
back go through an llguidance interpreter here, one by one, as the local
decode loop drives its own (engines/loop.py): the mask before each token gives
the allowed-set size, the masked flags of the alternatives and whether the
grammar forced the token; a hidden stop string becomes a Backtrack; captures
come from the interpreter's progress.  A token the mask rules out means the
server ignored the grammar: it is recorded, then a "grammar violation" error
Message, and the call fails.  Nothing is accepted silently.
"""

from __future__ import annotations

import time

import numpy as np
from llguidance import LLInterpreter
from llguidance.numpy import allocate_token_bitmask

from tracing import Alt, Message, ProbKind, Token, TokenKind

from ..errors import EngineError, GrammarError, one_line
from ..grammar import Lowered
from ..loop import _STOP_REASONS, CallResult, _Call, regex_is_empty
from ..stats import mask_from_bitmask
from . import gbnf
from .dialects import StreamToken, alt_probability, probability
from .errors import GrammarViolation, RemoteError

NAN = float("nan")


class RemoteCall(_Call):
    """Reuses the local loop's capture and backtrack bookkeeping (``_progress``, ``_finish_captures``,
    ``backtrack``); everything that touches the model is here."""

    def __init__(self, engine, text: bytes, lowered: Lowered, node_id: int, stop_check, temperature: float) -> None:
        # Not _Call.__init__: no local interpreter over a prompt, no logits.
        self._start_text(engine, text, node_id, stop_check)
        self.remote = engine.remote
        self.dialect = engine.remote.dialect
        self.temperature = temperature
        self.lowered = lowered
        self.tok = engine.remote.tokenizer
        self.lens: list[int] = []  # bytes of each matcher token committed (for hidden stops)
        self.queue = b""  # forced bytes the interpreter committed that the stream has not shown yet
        self.stopped = False
        self.violation: str | None = None
        self.dropped = 0  # tokens the server sent without any text (partial characters)
        # What the server is sent, and what the matcher follows.
        self.stop: list[str] = []
        self.max_tokens = engine.remote.max_tokens
        if self.dialect.llguidance:
            self.send = lowered.lark
            matcher_lark = lowered.lark
        else:
            plan = gbnf.plan(lowered.lark)  # UnsupportedGrammar before any request
            self.send = plan.gbnf
            matcher_lark = plan.matcher_lark
            self.stop = plan.stop
            if plan.max_tokens is not None:
                prefix = len(self.tok.tokenize(plan.prefix.encode())) if plan.prefix else 0
                self.max_tokens = min(self.max_tokens, plan.max_tokens + prefix)
        try:
            self.interp = LLInterpreter(self.tok.ll_tokenizer(), matcher_lark, enable_backtrack=True,
                                        enable_ff_tokens=True, log_level=0)
        except (ValueError, RuntimeError) as e:
            raise GrammarError(f"invalid grammar: {one_line(e)}") from None
        for pattern, what in lowered.regexes:
            if regex_is_empty(pattern):
                raise GrammarError(one_line(f"{what}: the regex {pattern!r} can never match (no text matches it)"))
        self.interp.start_without_prompt()
        self.n_vocab = self.tok.ll_tokenizer().vocab_size
        self.bitmask = allocate_token_bitmask(1, self.n_vocab)
        self.exact = self.tok.exact

    # -- the matcher --------------------------------------------------------------------
    def _mask(self) -> tuple[dict, np.ndarray | None, int]:
        info = self._compute_mask(self.bitmask)
        self._progress(info)
        if info.get("stop"):
            self.stopped = True
            return info, None, 0
        allowed, n = mask_from_bitmask(self.bitmask, self.n_vocab)
        return info, allowed, n

    def _matcher_tokens(self, st: StreamToken) -> tuple[int, bytes, list[int]]:
        """(the id to record, the token's bytes, the tokens the matcher consumes)."""
        if self.exact:
            tid = st.id
            if tid is None:
                tid = self.tok.id_of(st.bytes)
            if tid is not None and 0 <= tid < self.tok.vocab_size:
                b = self.tok.token_bytes(tid)
                return tid, b, [tid]
            ids = self.tok.tokenize(st.bytes) if st.bytes else []
            return (ids[0] if len(ids) == 1 else -1), st.bytes, ids
        return (st.id if st.id is not None else -1), st.bytes, list(st.bytes)

    def _violate(self, text: str) -> None:
        self.violation = one_line(f"grammar violation: {text}")

    def _consume(self, mt: list[int]) -> tuple[int, np.ndarray | None, int, bool]:
        """Feed one server token's matcher tokens.  Returns (allowed-set size before it or -1,
        the mask before it, hidden bytes, forced)."""
        first_allowed, first_mask, hidden, forced = -1, None, 0, bool(mt)
        for j, m in enumerate(mt):
            b = self.tok.token_bytes(m) if self.exact else bytes((m,))
            if self.queue:
                if self.queue.startswith(b):
                    self.queue = self.queue[len(b):]
                    self.lens.append(len(b))
                    if j == 0:
                        first_allowed = 1
                    continue
                if b.startswith(self.queue):  # the token runs past the forced text: match the rest by bytes
                    rest = b[len(self.queue):]
                    self.lens.append(len(self.queue))
                    self.queue = b""
                    sub = self.tok.tokenize(rest) if self.exact else list(rest)
                    a, mask, h, _ = self._consume(sub)
                    hidden += h
                    forced = False
                    if j == 0:
                        first_allowed, first_mask = a, mask
                    if self.violation:
                        return first_allowed, first_mask, hidden, False
                    continue
                self._violate(f"the server sent {b!r} where the grammar forces {self.queue[:40]!r}")
                return first_allowed, first_mask, hidden, False
            if self.stopped:
                self._violate(f"the server went on with {b!r} after the grammar was complete")
                return first_allowed, first_mask, hidden, False
            _, allowed, n = self._mask()
            if self.stopped:
                self._violate(f"the server went on with {b!r} after the grammar was complete")
                return first_allowed, first_mask, hidden, False
            if j == 0:
                first_allowed, first_mask = (n, allowed) if self.exact else (-1, None)
                forced = n == 1
            if allowed is not None and (m >= len(allowed) or not allowed[m]) and not self.dialect.llguidance \
                    and self.exact and self.tok.ll_tokenizer().is_special_token(m):
                # e.g. Gemma's "<h1>": special to llguidance, plain text to a server with no llguidance
                sub = [t for t in self.tok.ll_tokenizer().tokenize_bytes(b) if t != m]
                if sub:
                    a, mask, h, _ = self._consume(sub)
                    hidden += h
                    if j == 0:
                        first_allowed, first_mask, forced = a, mask, False
                    if self.violation:
                        return first_allowed, first_mask, hidden, False
                    continue
            if allowed is not None and (m >= len(allowed) or not allowed[m]):
                self._violate(f"the server sent {b!r}, which the grammar does not allow after "
                              f"{bytes(self.text[self.start_len:])[-40:]!r}")
                return first_allowed, first_mask, hidden, False
            try:
                bt, ff = self.interp.commit_token(m)
            except (ValueError, RuntimeError) as e:
                raise EngineError(f"llguidance: {one_line(e)}") from None
            self.lens.append(len(b))
            if bt == 0 and ff[:1] == [m]:
                self.queue = self._bytes_of(ff[1:])
            else:  # the token is hidden (a stop string), maybe with earlier ones
                for _ in range(min(bt + 1, len(self.lens))):
                    hidden += self.lens.pop()
                self.queue = self._bytes_of(ff)
        return first_allowed, first_mask, hidden, forced

    def _bytes_of(self, ids: list[int]) -> bytes:
        tb = self.tok.token_bytes if self.exact else (lambda i: bytes((i,)) if i < 256 else b"")
        return b"".join(tb(i) for i in ids)

    # -- events -------------------------------------------------------------------------
    def _emit(self, tid: int, b: bytes, kind: TokenKind, prob: float, prob_raw: float, top: list[Alt],
              top_allowed: list[Alt], prob_kind: ProbKind, latency_us: int, mask_us: int, allowed: int) -> None:
        # A forced token's before-mask number is its probability: the mask left no rival.
        p = prob if prob == prob else (prob_raw if prob_kind == ProbKind.BEFORE_MASK and allowed == 1 else NAN)
        self.record_token(Token(node_id=self.node_id, pos=len(self.text), id=tid, bytes=b, kind=kind, prob=prob,
                                prob_raw=prob_raw, top=top, latency_us=latency_us, mask_us=mask_us,
                                allowed=allowed, top_allowed=top_allowed, prob_kind=prob_kind), p)

    def _probabilities(self, st: StreamToken, tid: int, allowed_n: int, mask) -> tuple:
        """(prob, prob_raw, top, top_allowed, kind) from the server's numbers and the local mask."""
        kind = ProbKind.AFTER_SAMPLING if st.prob_is_linear else self.dialect.prob_kind
        p = probability(st)
        top: list[Alt] = []
        for a in st.top:
            aid = a.id if a.id is not None else (self.tok.id_of(a.bytes) if self.exact else None)
            ab = a.bytes or (self.tok.token_bytes(aid) if aid is not None and self.exact else b"")
            masked = bool(mask is not None and aid is not None and 0 <= aid < len(mask) and not mask[aid])
            top.append(Alt(aid if aid is not None else -1, ab, alt_probability(a, st.prob_is_linear), masked))
        if kind != ProbKind.BEFORE_MASK:
            return p, NAN, top, [], kind
        prob = NAN
        top_allowed: list[Alt] = []
        if allowed_n == 1:
            prob = 1.0
        elif mask is not None and 0 < allowed_n <= len(top) + 1 and p == p:
            # Every allowed token's raw probability is known: renormalise exactly over them.
            known = {a.id: a for a in top if not a.masked and a.id >= 0}
            if tid >= 0:
                known.setdefault(tid, Alt(tid, self.tok.token_bytes(tid), p, False))
            if len(known) == allowed_n:
                z = sum(a.prob for a in known.values())
                if z > 0:
                    prob = p / z
                    top_allowed = sorted((Alt(a.id, a.bytes, a.prob / z, False) for a in known.values()),
                                         key=lambda a: -a.prob)
        return prob, p, top, top_allowed if any(a.masked for a in top) else [], kind

    # -- the call -------------------------------------------------------------------------
    def run(self) -> CallResult:
        session = self.engine.session
        t0 = time.perf_counter_ns()
        info, _, _ = self._mask()
        if info.get("stop") and not self.interp.is_accepting():
            raise GrammarError(f"the grammar can never match: no text satisfies it "
                               f"(llguidance stopped with {self.interp.stop_reason()} before the first token)")
        self.stopped = bool(info.get("stop"))
        first_mask_us = (time.perf_counter_ns() - t0) // 1000
        finish = None
        stop_reason = ""
        if not self.stopped:
            req = self.dialect.request(self.remote.model, bytes(self.text).decode("utf-8", "replace"), self.send,
                                       max_tokens=self.max_tokens, temperature=self.temperature, stop=self.stop,
                                       top_k=self.opts.top_k)
            stream = self.remote.client.stream(req.path, req.body)
            last_t = stream.t_sent_ns
            try:
                for chunk in stream:
                    session.check_cancelled()
                    share = True
                    for st in self.dialect.tokens(chunk.data):
                        latency_us = (chunk.t_ns - last_t) // 1000 if share else 0
                        share = False
                        if self._token(st, latency_us, first_mask_us):
                            break
                        first_mask_us = 0
                    last_t = chunk.t_ns
                    if self.violation or self.stopped_early:
                        break
                    finish = self.dialect.finish(chunk.data) or finish
                    if finish and not self.dialect.llguidance and self.stopped:
                        break
                else:
                    if stream.ended_by != "done" and finish is None:
                        raise RemoteError(f"POST {req.path}: the stream was cut in the middle "
                                          f"(it ended without [DONE] or a final chunk)")
            finally:
                stream.close()
        if self.violation:
            self.store.append(Message(level="error", text=self.violation))
            raise GrammarViolation(self.violation)
        if self.stopped_early:
            stop_reason = "tool"
        else:
            self._finish_stream(finish)
        if self.dropped:
            session.warn(f"the server sent {self.dropped} token(s) without text (parts of a character it "
                         "could not decode): their bytes are missing from the text")
        self.result.stop_reason = stop_reason or self._stop_reason(finish)
        self.result.text = bytes(self.text)
        self._finish_captures(complete=not stop_reason and self.interp.is_accepting())
        return self.result

    stopped_early = False

    def _token(self, st: StreamToken, latency_us: int, mask_us0: int) -> bool:
        """Record one streamed token; True when the call should stop reading."""
        if self.exact and st.id is not None and st.id in self.tok.eos_ids:
            return False  # EOS carries no text; _finish_stream checks the grammar could end here
        tid, b, mt = self._matcher_tokens(st)
        if not b:
            if st.id is None:  # text only, and none: a part of a character the server could not decode
                self.dropped += 1
            return False
        t0 = time.perf_counter_ns()
        allowed_n, mask, hidden, forced = self._consume(mt)
        mask_us = (time.perf_counter_ns() - t0) // 1000 + mask_us0
        prob, prob_raw, top, top_allowed, kind = self._probabilities(st, tid, allowed_n, mask)
        self._emit(tid, b, TokenKind.FORCED if forced and self.exact else TokenKind.GENERATED, prob, prob_raw,
                   top, top_allowed, kind, latency_us, mask_us, allowed_n)
        if hidden and not self.violation:
            self.backtrack(min(hidden, len(self.text) - self.start_len), 1, "stop")
        if self.violation:
            return True
        if self.stop_check is not None and not self.queue:
            cut = self.stop_check(bytes(self.text[self.start_len:]))
            if cut is not None:
                end = self.start_len + cut
                if end < len(self.text):
                    self.backtrack(len(self.text) - end, 1, "tool")
                self.stopped_early = True
                return True
        return False

    def _finish_stream(self, finish: str | None) -> None:
        if self.queue:  # text the grammar forced after the server's last token: the local loop adds it too
            ids = self.tok.tokenize(self.queue) if self.exact else list(self.queue)
            for tid in ids:
                b = self.tok.token_bytes(tid) if self.exact else bytes((tid,))
                self._emit(tid if self.exact else -1, b, TokenKind.FORCED, 1.0, NAN, [], [], ProbKind.LOCAL, 0, 0, 1)
            self.queue = b""
        if not self.stopped:
            _, allowed, _ = self._mask()
            if not self.stopped and allowed is not None:
                eos = next((e for e in self.tok.eos_ids if e < len(allowed) and allowed[e]), None)
                if eos is not None:
                    try:
                        self.interp.commit_token(eos)
                    except (ValueError, RuntimeError) as e:
                        raise EngineError(f"llguidance: {one_line(e)}") from None
                    self._mask()
            elif not self.stopped and self.interp.is_accepting():
                pass
        if not self.interp.is_accepting() and finish != "length" and self.dialect.llguidance:
            text = one_line(f"grammar violation: the server stopped ({finish or 'end of stream'}) before the "
                            f"grammar was complete, after {bytes(self.text[self.start_len:])[-40:]!r}")
            self.store.append(Message(level="error", text=text))
            raise GrammarViolation(text)
        if not self.interp.is_accepting():
            self.engine.session.warn(one_line(
                f"the server stopped ({finish or 'end of stream'}) before the grammar was complete: kept "
                f"{bytes(self.text[self.start_len:])[-40:]!r}"))

    def _stop_reason(self, finish: str | None) -> str:
        if finish == "length" and not self.interp.is_accepting():
            return "max_tokens"
        reason = self.interp.stop_reason()
        return _STOP_REASONS.get(reason, reason) if reason and reason != "NotStopped" else "eos"
