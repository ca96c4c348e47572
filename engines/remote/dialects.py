"""What each kind of server is asked, and how its streamed answer is read.

| dialect | endpoint | grammar | per token | probabilities |
|---|---|---|---|---|
| vllm | /v1/completions | ``structured_outputs: {grammar: lark}`` (guidance backend) | ids (``token_id:N``) | after the mask |
| sglang | /v1/completions | ``ebnf: lark`` (llguidance grammar backend) | text | unknown |
| llama-server | /completion | ``grammar: "%llguidance {}\\n" + lark`` | ids and bytes | before the mask (``n_probs``) |
| llama-cpp-python | /v1/completions | GBNF ``grammar`` (see gbnf.py) | text | before the mask |

Every dialect streams SSE ``data:`` chunks; :meth:`Dialect.tokens` turns one
chunk into :class:`StreamToken`s, whatever logprobs shape it carries (the
completions API's ``tokens/token_logprobs/top_logprobs``, the chat API's
``content[]``, llama.cpp's ``completion_probabilities[]``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tracing import ProbKind

TOP_K = 5


@dataclass
class Alternative:
    id: int | None
    bytes: bytes
    logprob: float


@dataclass
class StreamToken:
    id: int | None  # None: the server gave only text
    bytes: bytes
    logprob: float = float("nan")
    prob_is_linear: bool = False  # llama-server's post-sampling "prob" (not a log)
    top: list[Alternative] = field(default_factory=list)


@dataclass
class Request:
    path: str
    body: dict


class Dialect:
    name = ""
    prob_kind = ProbKind.UNKNOWN
    llguidance = True  # the server runs llguidance on the Lark grammar

    extra: dict = {}  # fields this server needs besides the completions endpoint's own

    def grammar(self, grammar: str) -> dict:
        """The request fields that carry the grammar (Lark, or GBNF where ``llguidance`` is False)."""
        raise NotImplementedError

    def request(self, model: str | None, prompt: str, grammar: str | None, *, max_tokens: int, temperature: float,
                stop: list[str], top_k: int = TOP_K) -> Request:
        """A streamed ``/v1/completions`` request (the raw prompt continued, with top-k logprobs)."""
        body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": temperature,
                "stream": True, "logprobs": top_k, **self.extra}
        if grammar is not None:
            body.update(self.grammar(grammar))
        if stop:
            body["stop"] = stop
        return Request("/v1/completions", body)

    def tokens(self, chunk: dict) -> list[StreamToken]:
        choices = chunk.get("choices") or []
        return openai_tokens(choices[0]) if choices else []

    def finish(self, chunk: dict) -> str | None:
        """The finish reason when this chunk ends the answer, else None."""
        choices = chunk.get("choices") or [{}]
        return choices[0].get("finish_reason") or None


def _token_id(text: str) -> int | None:
    if text.startswith("token_id:"):
        try:
            return int(text[9:])
        except ValueError:
            return None
    return None


def _lp(x) -> float:
    try:
        return float(x) if x is not None else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def _raw(entry: dict, text: str) -> bytes:
    b = entry.get("bytes")
    if isinstance(b, list):
        try:
            return bytes(b)
        except (TypeError, ValueError):
            pass
    return text.encode("utf-8")


def _chat_alternative(a: dict) -> Alternative:
    t = str(a.get("token", ""))
    aid = _token_id(t)
    return Alternative(aid, _raw(a, "" if aid is not None else t), _lp(a.get("logprob")))


def openai_tokens(choice: dict) -> list[StreamToken]:
    """Tokens of one choice of a completions (or chat) chunk, in either logprobs shape."""
    text = choice.get("text")
    if text is None:
        text = (choice.get("delta") or {}).get("content") or ""
    lp = choice.get("logprobs")
    if not lp:
        return [StreamToken(None, text.encode("utf-8"))] if text else []
    out: list[StreamToken] = []
    if isinstance(lp.get("content"), list):  # the chat shape: content[].{token, logprob, bytes, top_logprobs}
        for e in lp["content"]:
            t = str(e.get("token", ""))
            tid = _token_id(t)
            top = [_chat_alternative(a) for a in e.get("top_logprobs") or ()]
            out.append(StreamToken(tid, _raw(e, "" if tid is not None else t), _lp(e.get("logprob")), top=top))
    else:  # the completions shape: tokens[], token_logprobs[], top_logprobs[{text: logprob}]
        toks = lp.get("tokens") or []
        lps = lp.get("token_logprobs") or []
        tops = lp.get("top_logprobs") or []
        for i, t in enumerate(toks):
            t = str(t)
            tid = _token_id(t)
            top = []
            d = tops[i] if i < len(tops) else None
            for k, v in sorted((d or {}).items(), key=lambda kv: -_lp(kv[1])):
                kid = _token_id(str(k))
                top.append(Alternative(kid, b"" if kid is not None else str(k).encode("utf-8"), _lp(v)))
            out.append(StreamToken(tid, b"" if tid is not None else t.encode("utf-8"),
                                   _lp(lps[i] if i < len(lps) else None), top=top))
    # With ids only, the chunk's text is the token text (one token per chunk is what servers send).
    if len(out) == 1 and out[0].id is not None and not out[0].bytes and text:
        out[0].bytes = text.encode("utf-8")
    return out


class VLLM(Dialect):
    name = "vllm"
    prob_kind = ProbKind.AFTER_MASK  # vLLM applies the grammar bitmask before it computes logprobs
    extra = {"return_tokens_as_token_ids": True}

    def grammar(self, grammar):
        return {"structured_outputs": {"grammar": grammar}}


class SGLang(VLLM):
    name = "sglang"
    prob_kind = ProbKind.UNKNOWN
    extra = {}

    def grammar(self, grammar):
        return {"ebnf": grammar}


class LlamaServer(Dialect):
    name = "llama-server"
    prob_kind = ProbKind.BEFORE_MASK  # n_probs: a softmax of the raw logits

    def request(self, model, prompt, lark, *, max_tokens, temperature, stop, top_k=TOP_K):
        body = {"prompt": prompt, "n_predict": max_tokens, "temperature": temperature, "stream": True,
                "n_probs": top_k, "return_tokens": True, "repeat_penalty": 1.0, "cache_prompt": True}
        if model:
            body["model"] = model
        if lark is not None:
            body["grammar"] = "%llguidance {}\n" + lark
        if stop:
            body["stop"] = stop
        return Request("/completion", body)

    def tokens(self, chunk):
        probs = chunk.get("completion_probabilities")
        if not probs:
            content = chunk.get("content") or ""
            ids = chunk.get("tokens") or []
            if len(ids) == 1:
                return [StreamToken(int(ids[0]), content.encode("utf-8"))]
            return [StreamToken(None, content.encode("utf-8"))] if content else []
        out = []
        for e in probs:
            linear = "prob" in e and "logprob" not in e  # post_sampling_probs
            top_list = e.get("top_logprobs") if not linear else e.get("top_probs")
            top = [Alternative(a.get("id"), _raw(a, str(a.get("token", ""))),
                               _lp(a.get("prob") if linear else a.get("logprob"))) for a in top_list or ()]
            out.append(StreamToken(e.get("id"), _raw(e, str(e.get("token", ""))),
                                   _lp(e.get("prob") if linear else e.get("logprob")), prob_is_linear=linear,
                                   top=top))
        return out

    def finish(self, chunk):
        if chunk.get("stop"):
            return {"eos": "stop", "word": "stop", "limit": "length"}.get(chunk.get("stop_type", ""), "stop")
        return super().finish(chunk) if "choices" in chunk else None


class LlamaCppPython(Dialect):
    name = "llama-cpp-python"
    prob_kind = ProbKind.BEFORE_MASK  # its logprobs come from the raw logits
    llguidance = False

    extra = {"repeat_penalty": 1.0}

    def grammar(self, grammar):
        return {"grammar": grammar}


DIALECTS = {d.name: d for d in (VLLM(), SGLang(), LlamaServer(), LlamaCppPython())}


def probability(tok: StreamToken) -> float:
    if tok.prob_is_linear:
        return tok.logprob
    return math.exp(tok.logprob) if tok.logprob == tok.logprob else float("nan")


def alt_probability(a: Alternative, linear: bool) -> float:
    if linear:
        return a.logprob
    return math.exp(a.logprob) if a.logprob == a.logprob else float("nan")
