"""A small HTTP client for OpenAI-compatible servers: JSON requests and SSE streams.

The standard library only (``http.client``): one connection per request, a
timeout on every socket operation, retries for idempotent requests, and one
line of text for every failure (connection refused, 401, an unknown model,
5xx, a stream cut in the middle, a malformed chunk).
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from dataclasses import dataclass
from typing import Iterator
from urllib.parse import urlsplit

from ..errors import one_line
from .errors import RemoteError

#: Delays before the retries of an idempotent request (a GET, or a POST the server never received).
RETRY_DELAYS = (0.2, 0.6)


@dataclass
class Chunk:
    """One SSE ``data:`` event: its JSON, and when its last byte arrived (``time.perf_counter_ns``)."""

    data: dict
    t_ns: int


class HttpError(RemoteError):
    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class Client:
    """``base_url`` is the server's root or its ``/v1``; ``timeout`` applies to each socket read."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 60.0,
                 connect_timeout: float = 10.0) -> None:
        url = base_url.strip()
        if "://" not in url:
            url = "http://" + url
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RemoteError(f"not a server URL: {base_url!r} (expected http://HOST:PORT)")
        self.scheme = parts.scheme
        self.host = parts.hostname
        try:
            self.port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise RemoteError(f"not a server URL: {base_url!r} (bad port)") from None
        path = parts.path.rstrip("/")
        if path.endswith("/v1"):
            path = path[:-3]
        self.root = path  # every path below is relative to it ("/v1/models", "/props")
        self.base_url = f"{self.scheme}://{parts.netloc}{self.root}"
        self.api_key = api_key
        self.timeout = timeout
        self.connect_timeout = connect_timeout

    # -- plumbing ---------------------------------------------------------------------
    def _connect(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        conn = cls(self.host, self.port, timeout=self.connect_timeout)
        try:
            conn.connect()
        except OSError as e:
            conn.close()
            raise self._connect_error(e) from None
        conn.sock.settimeout(self.timeout)
        return conn

    def _connect_error(self, e: OSError) -> RemoteError:
        where = f"{self.host}:{self.port}"
        if isinstance(e, ConnectionRefusedError):
            return RemoteError(f"cannot connect to {where}: connection refused (is the server running?)")
        if isinstance(e, (socket.timeout, TimeoutError)):
            return RemoteError(f"cannot connect to {where}: timed out after {self.connect_timeout:g} s")
        if isinstance(e, socket.gaierror):
            return RemoteError(f"cannot connect to {where}: unknown host")
        return RemoteError(one_line(f"cannot connect to {where}: {e.strerror or e}"))

    def _headers(self, body: bool) -> dict:
        h = {"Accept": "application/json, text/event-stream"}
        if body:
            h["Content-Type"] = "application/json"
        if self.api_key:
            h["Authorization"] = f"Bearer {self.api_key}"
        return h

    def _send(self, method: str, path: str, body: dict | None, *, retry: bool, resend: bool = True):
        """Send a request; returns (connection, response) for a 2xx answer, else raises HttpError.

        ``retry``: try again when the connection cannot be made; ``resend``: also when the request
        may have reached the server (a failed exchange, a 5xx) — only for idempotent requests."""
        data = json.dumps(body).encode() if body is not None else None
        delays = RETRY_DELAYS if retry else ()
        for attempt in range(len(delays) + 1):
            try:
                conn = self._connect()
            except RemoteError:
                if attempt < len(delays):
                    time.sleep(delays[attempt])
                    continue
                raise
            try:
                conn.request(method, self.root + path, body=data, headers=self._headers(data is not None))
                resp = conn.getresponse()
            except (socket.timeout, TimeoutError):
                conn.close()
                raise RemoteError(f"{method} {path}: no answer from {self.host}:{self.port} "
                                  f"within {self.timeout:g} s") from None
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                if retry and resend and attempt < len(delays):
                    time.sleep(delays[attempt])
                    continue
                raise RemoteError(one_line(f"{method} {path}: the connection failed ({e or type(e).__name__})")) from None
            if resp.status >= 500 and retry and resend and attempt < len(delays):
                resp.read()
                conn.close()
                time.sleep(delays[attempt])
                continue
            if resp.status >= 300:
                try:
                    text = resp.read(4096).decode("utf-8", "replace")
                except (OSError, http.client.HTTPException):
                    text = ""
                conn.close()
                raise HttpError(self._status_line(method, path, resp.status, resp.reason, text), resp.status)
            return conn, resp
        raise AssertionError("unreachable")

    def _status_line(self, method: str, path: str, status: int, reason: str, text: str) -> str:
        detail = _error_detail(text)
        if status == 401:
            what = "unauthorized: the server wants an API key" if not self.api_key else "unauthorized: the API key was refused"
        elif status == 403:
            what = "forbidden"
        elif status >= 500:
            what = f"server error {status} {reason}".rstrip()
        else:
            what = f"{status} {reason}".rstrip()
        return one_line(f"{method} {path}: {what}" + (f" ({detail})" if detail else ""))

    # -- requests ---------------------------------------------------------------------
    def get_json(self, path: str, *, retry: bool = True) -> dict | list:
        conn, resp = self._send("GET", path, None, retry=retry)
        try:
            raw = resp.read()
        except (socket.timeout, TimeoutError):
            raise RemoteError(f"GET {path}: timed out reading the answer") from None
        except (OSError, http.client.HTTPException) as e:
            raise RemoteError(one_line(f"GET {path}: the answer was cut ({e or type(e).__name__})")) from None
        finally:
            conn.close()
        try:
            return json.loads(raw)
        except ValueError:
            raise RemoteError(f"GET {path}: the answer is not JSON") from None

    def stream(self, path: str, body: dict) -> "Stream":
        """POST ``body`` and read the answer as server-sent events.  Nothing was generated when the
        connection fails, so that is retried; once the server answered, never."""
        t0 = time.perf_counter_ns()
        conn, resp = self._send("POST", path, body, retry=True, resend=False)
        return Stream(self, path, conn, resp, t0)


class Stream:
    """The ``data:`` events of one streamed answer, as :class:`Chunk`; ends at ``[DONE]``.

    ``ended_by``: "done" ([DONE]), "eof" (the server closed the stream cleanly after a final chunk
    the dialect recognised; set by the caller), or "" while reading."""

    def __init__(self, client: Client, path: str, conn, resp, t_sent_ns: int) -> None:
        self.client, self.path, self.conn, self.resp = client, path, conn, resp
        self.t_sent_ns = t_sent_ns
        self.ended_by = ""
        self.json_answer = None  # a plain JSON body (a server that does not stream)
        ctype = (resp.getheader("Content-Type") or "").lower()
        self.is_sse = "text/event-stream" in ctype

    def close(self) -> None:
        try:
            self.conn.close()
        except OSError:
            pass

    def __iter__(self) -> Iterator[Chunk]:
        if not self.is_sse:
            yield from self._plain()
            return
        data_lines: list[bytes] = []
        readline = self.resp.readline
        while True:
            try:
                line = readline(1 << 20)
            except (socket.timeout, TimeoutError):
                raise RemoteError(f"POST {self.path}: the stream stalled: nothing for "
                                  f"{self.client.timeout:g} s") from None
            except (OSError, http.client.HTTPException) as e:
                raise RemoteError(one_line(f"POST {self.path}: the stream was cut in the middle "
                                           f"({e or type(e).__name__})")) from None
            t = time.perf_counter_ns()
            if not line:  # EOF: a stream must end with [DONE] or a final chunk (the caller decides)
                if data_lines:
                    yield self._decode(b"\n".join(data_lines), t)
                return
            line = line.rstrip(b"\r\n")
            if not line:  # the blank line that ends an event
                if data_lines:
                    payload = b"\n".join(data_lines)
                    data_lines = []
                    if payload.strip() == b"[DONE]":
                        self.ended_by = "done"
                        return
                    yield self._decode(payload, t)
                continue
            if line.startswith(b":"):  # a comment (keep-alive ping)
                continue
            field, _, value = line.partition(b":")
            if field == b"data":
                data_lines.append(value[1:] if value.startswith(b" ") else value)
            # other fields (event:, id:, retry:) carry nothing we use

    def _decode(self, payload: bytes, t: int) -> Chunk:
        try:
            data = json.loads(payload)
        except ValueError:
            raise RemoteError(one_line(f"POST {self.path}: a malformed chunk in the stream: "
                                       f"{payload[:80].decode('utf-8', 'replace')!r}")) from None
        if not isinstance(data, dict):
            raise RemoteError(one_line(f"POST {self.path}: a malformed chunk in the stream (not an object)"))
        if "error" in data and not data.get("choices"):
            detail = _error_detail(json.dumps(data))
            raise RemoteError(one_line(f"POST {self.path}: the server reported an error mid-stream: {detail}"))
        return Chunk(data, t)

    def _plain(self) -> Iterator[Chunk]:
        try:
            raw = self.resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise RemoteError(one_line(f"POST {self.path}: the answer was cut ({e or type(e).__name__})")) from None
        t = time.perf_counter_ns()
        yield self._decode(raw, t)
        self.ended_by = "done"


def _error_detail(text: str) -> str:
    """The message inside an error body: OpenAI's {"error": {"message"}}, FastAPI's {"detail"}, or text."""
    try:
        obj = json.loads(text)
    except ValueError:
        return one_line(text)[:200] if text.strip() else ""
    if isinstance(obj, dict):
        err = obj.get("error", obj.get("detail", obj.get("message")))
        if isinstance(err, dict):
            err = err.get("message") or err.get("msg") or json.dumps(err)
        if isinstance(err, list) and err and isinstance(err[0], dict):  # FastAPI validation errors
            err = "; ".join(str(e.get("msg", e)) for e in err[:3])
        if err is not None:
            return one_line(str(err))[:200]
    return one_line(text)[:200]
