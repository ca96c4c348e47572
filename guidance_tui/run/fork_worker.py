"""The fork worker: a background process that loads a run's model once and regenerates nodes.

The app must stay responsive while a model loads (seconds) and decodes, and llama.cpp must not
share the app's interpreter lock, so forks run in a child process::

    python -m guidance_tui.run.fork_worker

It reads requests from stdin and writes replies to stdout, each a msgpack frame with a 4-byte
length.  Requests: ``load`` (model, backend), ``fork`` (a :class:`engines.fork.Plan` and ALT),
``probe`` (a plan and N), ``quit``.  A fork's events stream back one reply each as the decode
loop makes them, so the first forked token shows while the rest is generated.

:class:`ForkWorker` is the app's side: it starts the process, loads the model in the
background, and calls back (on its reader thread) with each reply.  Nothing here imports
Textual.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import threading
import time
from typing import Any, Callable

import msgspec

from tracing import Alt, AnyEvent

_LEN = struct.Struct("<I")


class Reply(msgspec.Struct, kw_only=True, omit_defaults=True):
    op: str  # loaded | event | done | probe | error
    event: AnyEvent | None = None
    seconds: float = 0.0
    text: bytes = b""  # done: the node's new text
    alt: int = -1  # done: the token put at K
    before: list[Alt] = []  # probe
    after: list[Alt] = []
    message: str = ""  # error
    usage: bool = False  # error: the request was wrong (not the model or the engine)


class Request(msgspec.Struct, kw_only=True, omit_defaults=True):
    op: str  # load | fork | probe | quit
    model: str = ""
    backend: str = ""
    plan: Any = None  # engines.fork.Plan (typed when decoded in the worker)
    alt: str = ""
    n: int = 0


def _write(stream, data: bytes, lock: threading.Lock) -> None:
    with lock:
        stream.write(_LEN.pack(len(data)) + data)
        stream.flush()


def _read(stream) -> bytes | None:
    head = stream.read(_LEN.size)
    if len(head) < _LEN.size:
        return None
    (n,) = _LEN.unpack(head)
    data = stream.read(n)
    return data if len(data) == n else None


# -- the worker process ---------------------------------------------------------------

def serve(inp, out) -> None:
    from engines import fork
    from engines.errors import EngineError

    dec = msgspec.msgpack.Decoder(Request)
    enc = msgspec.msgpack.Encoder()
    lock = threading.Lock()
    backend = None
    loaded: tuple[str, str] | None = None

    def send(r: Reply) -> None:
        _write(out, enc.encode(r), lock)

    while True:
        data = _read(inp)
        if data is None:
            return
        try:
            req = dec.decode(data)
            if req.plan is not None:  # a map on the wire: typed here, where engines is loaded
                req.plan = msgspec.convert(req.plan, fork.Plan)
            if req.op == "quit":
                return
            if req.op == "load" or (req.plan is not None and loaded != (req.plan.model, req.plan.backend)):
                model, name = (req.model, req.backend) if req.op == "load" else (req.plan.model, req.plan.backend)
                t0 = time.perf_counter()
                backend = fork.load_backend(model, name)
                backend.ll_tokenizer()  # built now, not on the first fork
                loaded = (model, name)
                send(Reply(op="loaded", seconds=time.perf_counter() - t0))
                if req.op == "load":
                    continue
            plan = req.plan
            tid = fork.resolve_alt(plan, req.alt or str(plan.token.id),
                                   lambda b: backend.tokenize(b, add_bos=False)) if req.op == "fork" else -1
            t0 = time.perf_counter()
            if req.op == "fork":
                res = fork.run(backend, plan, tid, emit=lambda ev: send(Reply(op="event", event=ev)))
                send(Reply(op="done", text=res.node_text, alt=tid, seconds=time.perf_counter() - t0))
            elif req.op == "probe":
                before, after = fork.probe(backend, plan, req.n)
                send(Reply(op="probe", before=before, after=after, seconds=time.perf_counter() - t0))
            else:
                send(Reply(op="error", message=f"unknown request {req.op!r}", usage=True))
        except fork.ForkError as e:
            send(Reply(op="error", message=str(e), usage=e.usage))
        except EngineError as e:
            send(Reply(op="error", message=str(e)))
        except Exception as e:  # noqa: BLE001 - the worker answers every request, whatever broke
            send(Reply(op="error", message=f"the fork worker failed: {type(e).__name__}: {e}"))


def main() -> None:
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but replies on the protocol stream
    serve(sys.stdin.buffer, out)


# -- the app's side ----------------------------------------------------------------------

class ForkWorker:
    """One worker process for one model; one request at a time.

    ``on_reply`` is called on the reader thread with each :class:`Reply`; ``busy`` is True from
    a request until its final reply (done, probe or error).
    """

    def __init__(self, model: str, backend: str, on_reply: Callable[[Reply], None]) -> None:
        self.model, self.backend = model, backend
        self.on_reply = on_reply
        self.load_seconds: float | None = None
        self.loaded = threading.Event()
        self.busy = False  # a request is outstanding
        self._queue: list[str] = []  # ops of the requests not answered yet, oldest first
        self.started = time.perf_counter()
        self._enc = msgspec.msgpack.Encoder()
        self._dec = msgspec.msgpack.Decoder(Reply)
        self._lock = threading.Lock()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "guidance_tui.run.fork_worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        self._reader = threading.Thread(target=self._read_loop, name="fork-worker", daemon=True)
        self._reader.start()
        self._send(Request(op="load", model=model, backend=backend))

    def _send(self, req: Request) -> None:
        data = self._enc.encode(req)
        try:
            with self._lock:
                if req.op != "quit":
                    self._queue.append(req.op)
                    self.busy = True
                self.proc.stdin.write(_LEN.pack(len(data)) + data)
                self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            with self._lock:
                self._queue.clear()
                self.busy = False
            self.on_reply(Reply(op="error", message="the fork worker is gone (it exited)"))

    def _read_loop(self) -> None:
        while True:
            data = _read(self.proc.stdout)
            if data is None:
                with self._lock:
                    pending, self.busy = bool(self._queue), False
                    self._queue.clear()
                if pending:
                    self.on_reply(Reply(op="error", message="the fork worker exited before it answered"))
                return
            r = self._dec.decode(data)
            if r.op == "loaded":
                self.load_seconds = r.seconds
                self.loaded.set()
            with self._lock:
                # A reply ends its request: "loaded" ends a load (a fork may load another model first).
                if self._queue and (r.op in ("done", "probe", "error") or (r.op == "loaded" and self._queue[0] == "load")):
                    self._queue.pop(0)
                self.busy = bool(self._queue)
            self.on_reply(r)

    def fork(self, plan, alt: str) -> None:
        self._send(Request(op="fork", plan=plan, alt=alt))

    def probe(self, plan, n: int) -> None:
        self._send(Request(op="probe", plan=plan, n=n))

    def close(self) -> None:
        try:
            self._send(Request(op="quit"))
            self.proc.stdin.close()
        except (OSError, ValueError):
            pass
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


if __name__ == "__main__":
    main()
