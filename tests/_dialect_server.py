"""A small OpenAI-compatible test server that answers in the documented shapes of vLLM,
SGLang and llama.cpp's llama-server, with tokens from the real local engine.

Generation is what such a server does: the prompt tokenised with BOS, then greedy
decoding of the embedded Gemma (llama-cpp-python in-process) under an llguidance
matcher for the grammar the request carries, one SSE ``data:`` chunk per token and
a final ``[DONE]``.  ``mode`` makes it misbehave for the error-path tests:
``ignore_grammar`` (samples without the mask), ``cut`` (closes the stream after two
tokens), ``malformed`` (a chunk that is not JSON), ``error500``, ``stall`` (sends
nothing for a while).
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import llguidance
import numpy as np
from llguidance.numpy import allocate_token_bitmask

from engines.stats import analyse, mask_from_bitmask

OWNERS = {"vllm": "vllm", "sglang": "sglang", "llama-server": "llamacpp"}


class DialectServer:
    def __init__(self, dialect: str, backend, *, model: str = "gemma-3-270m", api_key: str | None = None,
                 shape: str = "completions") -> None:
        self.dialect, self.backend, self.model, self.api_key, self.shape = dialect, backend, model, api_key, shape
        self.mode = "ok"
        self.requests: list[dict] = []  # the bodies received, for the tests to check
        self._server: ThreadingHTTPServer | None = None

    # -- lifetime -----------------------------------------------------------------------
    def start(self) -> str:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):
                owner._get(self)

            def do_POST(self):
                owner._post(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name=f"dialect-{self.dialect}", daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # -- answers ------------------------------------------------------------------------
    def _json(self, h, status: int, obj) -> None:
        data = json.dumps(obj).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _authorised(self, h) -> bool:
        if self.api_key and h.headers.get("Authorization") != f"Bearer {self.api_key}":
            self._json(h, 401, {"error": {"message": "Invalid API key", "type": "auth_error", "code": 401}})
            return False
        return True

    def _get(self, h) -> None:
        if not self._authorised(h):
            return
        if h.path == "/v1/models":
            self._json(h, 200, {"object": "list", "data": [
                {"id": self.model, "object": "model", "created": 0, "owned_by": OWNERS[self.dialect]}]})
        elif h.path == "/version" and self.dialect == "vllm":
            self._json(h, 200, {"version": "0.11.0"})
        elif h.path == "/props" and self.dialect == "llama-server":
            self._json(h, 200, {"default_generation_settings": {"n_ctx": self.backend.n_ctx}, "total_slots": 1,
                                "model_path": self.backend.model_id, "build_info": "test"})
        elif h.path == "/get_model_info" and self.dialect == "sglang":
            self._json(h, 200, {"model_path": self.model, "is_generation": True})
        else:
            self._json(h, 404, {"error": {"message": f"no route {h.path}", "code": 404}})

    def _post(self, h) -> None:
        n = int(h.headers.get("Content-Length") or 0)
        body = json.loads(h.rfile.read(n) or b"{}")
        if not self._authorised(h):
            return
        self.requests.append(body)
        path = "/completion" if self.dialect == "llama-server" else "/v1/completions"
        if h.path != path:
            self._json(h, 404, {"error": {"message": f"no route {h.path}", "code": 404}})
            return
        if body.get("model") not in (None, self.model):
            self._json(h, 404, {"error": {"message": f"The model `{body['model']}` does not exist.",
                                          "type": "NotFoundError", "code": 404}})
            return
        if self.mode == "error500":
            self._json(h, 500, {"error": {"message": "CUDA out of memory", "code": 500}})
            return
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Cache-Control", "no-cache")
        h.send_header("Connection", "close")
        h.end_headers()
        h.close_connection = True
        chunks = self._chunks(body)
        try:
            for i, chunk in enumerate(chunks):
                if self.mode == "cut" and i == 2:
                    h.wfile.flush()
                    h.connection.shutdown(socket.SHUT_RDWR)
                    return
                if self.mode == "malformed" and i == 1:
                    h.wfile.write(b'data: {"choices": [{"text": "x", "logprobs": \n\n')
                    h.wfile.flush()
                    return
                if self.mode == "stall" and i == 1:
                    time.sleep(3)
                h.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                h.wfile.flush()
            h.wfile.write(b"data: [DONE]\n\n")
            h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            chunks.close()  # a stream left early must release the model's lock now, not at garbage collection

    # -- generation -----------------------------------------------------------------------
    def _grammar(self, body: dict) -> str | None:
        if self.dialect == "vllm":
            return (body.get("structured_outputs") or {}).get("grammar")
        if self.dialect == "sglang":
            return body.get("ebnf")
        g = body.get("grammar")
        if g and g.startswith("%llguidance"):
            g = g.split("\n", 1)[1]
        return g

    def generate(self, body: dict):
        """(id, bytes, logprob of its kind, [(id, bytes, logprob)], finish) per step."""
        b = self.backend
        prompt = body.get("prompt", "")
        k = int(body.get("n_probs") or body.get("logprobs") or 0)
        max_tokens = min(int(body.get("n_predict") or body.get("max_tokens") or 16), 200)
        lark = self._grammar(body)
        with b.lock:
            if getattr(self, "_textless", None) is None:  # never sampled: tokens without text (not EOS)
                self._textless = np.array([not b.token_bytes(i) and i not in b.eos_ids for i in range(b.vocab_size)])
            ids = b.tokenize(prompt.encode(), add_bos=True)
            matcher = llguidance.LLMatcher(b.ll_tokenizer(), lark, log_level=0) if lark else None
            bitmask = allocate_token_bitmask(1, b.vocab_size)
            for step in range(max_tokens):
                row = np.array(b.logits(ids)[0], dtype=np.float32)
                allowed = None
                if matcher is not None and self.mode != "ignore_grammar":
                    matcher.unsafe_compute_mask_ptr(bitmask.ctypes.data, bitmask.nbytes)
                    allowed, _ = mask_from_bitmask(bitmask, b.vocab_size)
                st = analyse(row, allowed, max(k, 1))
                masked_row = np.where(self._textless, -np.inf, row if allowed is None else np.where(allowed, row, -np.inf))
                tid = int(np.argmax(masked_row))
                if self.dialect == "vllm":  # after the mask
                    lp = float(row[tid]) - st.log_z_masked
                    top_ids = np.argsort(-masked_row)[:k]
                    top = [(int(i), b.token_bytes(int(i)), float(row[i]) - st.log_z_masked) for i in top_ids]
                else:  # before the mask
                    lp = float(row[tid]) - st.log_z
                    top = [(int(i), b.token_bytes(int(i)), float(row[i]) - st.log_z) for i in st.top_ids[:k]]
                if tid in b.eos_ids:
                    yield tid, b"", lp, top, "stop"
                    return
                yield tid, b.token_bytes(tid), lp, top, None
                if matcher is not None:
                    matcher.consume_token(tid)
                ids.append(tid)
        yield None, b"", 0.0, [], "length"

    def _chunks(self, body: dict):
        n = 0
        steps = self.generate(body)
        try:
            for tid, data, lp, top, finish in steps:
                if tid is not None and (data or self.dialect == "vllm"):
                    n += 1
                    yield self._token_chunk(tid, data, lp, top, n)
                if finish:
                    yield self._final_chunk(finish, n)
                    return
        finally:
            steps.close()

    def _token_chunk(self, tid, data, lp, top, n) -> dict:
        text = data.decode("utf-8", "replace")
        if self.dialect == "llama-server":
            return {"index": 0, "content": text, "tokens": [tid], "stop": False, "id_slot": 0,
                    "tokens_predicted": n, "completion_probabilities": [{
                        "id": tid, "token": text, "bytes": list(data), "logprob": lp,
                        "top_logprobs": [{"id": i, "token": t.decode("utf-8", "replace"), "bytes": list(t),
                                          "logprob": l} for i, t, l in top]}]}
        if self.dialect == "vllm" and self.shape == "content":
            logprobs = {"content": [{"token": f"token_id:{tid}", "logprob": lp, "bytes": list(data),
                                     "top_logprobs": [{"token": f"token_id:{i}", "logprob": l, "bytes": list(t)}
                                                      for i, t, l in top]}]}
        elif self.dialect == "vllm":
            logprobs = {"text_offset": [0], "token_logprobs": [lp], "tokens": [f"token_id:{tid}"],
                        "top_logprobs": [{f"token_id:{i}": l for i, t, l in top}]}
        else:  # sglang: text only
            logprobs = {"text_offset": [0], "token_logprobs": [lp], "tokens": [text],
                        "top_logprobs": [{t.decode("utf-8", "replace"): l for i, t, l in top}]}
        return {"id": "cmpl-test", "object": "text_completion", "created": 0, "model": self.model,
                "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": None}]}

    def _final_chunk(self, finish: str, n: int) -> dict:
        if self.dialect == "llama-server":
            return {"index": 0, "content": "", "tokens": [], "stop": True,
                    "stop_type": "eos" if finish == "stop" else "limit", "tokens_predicted": n, "timings": {}}
        return {"id": "cmpl-test", "object": "text_completion", "created": 0, "model": self.model,
                "choices": [{"index": 0, "text": "", "logprobs": None, "finish_reason": finish}]}


def probability(lp: float) -> float:
    return math.exp(lp)
