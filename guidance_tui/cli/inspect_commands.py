"""`guidance-tui info` and `guidance-tui export`: look at a trace file without the app.

``info`` prints a short summary.  ``export --format jsonl`` writes one JSON
object per event, in seq order, to stdout or ``-o FILE``.  The JSONL shape:

* ``type`` (the event's tag: ``token``, ``node_open``...), ``seq`` and
  ``t_us`` come first, then every field of the event, defaults included.
* Byte strings (``bytes`` of a token, an alternative or a backtrack) are
  standard base64 with padding, and a ``text`` field next to them holds
  :func:`tracing.display_text` of the same bytes (UTF-8, with ``<0xNN>`` for
  bytes of an incomplete character) for people and ``jq``.
* Floats that JSON cannot hold are strings: ``"NaN"`` (an unknown
  probability), ``"Infinity"`` and ``"-Infinity"``.  Every other float is a
  JSON number.  :func:`read_jsonl` turns such a file back into events, and the
  round trip is exact.
* A token's ``kind`` is its name: ``"prompt"``, ``"generated"`` or ``"forced"``.
* Top-k alternatives and GPU samples are objects with named fields.

Damage: a trace with damaged frames is read as every reader reads it (see
``tracing/fileformat.py``): the damaged parts are skipped and the good frames
kept, and both commands print one warning on stderr that names the byte
offset and the events lost, then succeed (exit 0) with what was kept, as for a
trace cut short.  A trace with nothing readable is an error (exit 1).

``export -o FILE`` never writes over the trace it exports (the same file by
inode, whatever the name: exit 2), nor over any other trace file unless
``--force`` (exit 2).  A FILE that is not a regular file (``/dev/null``, a
named pipe) is written to, never replaced.

This module never imports Textual or the engines.
"""

from __future__ import annotations

import base64
import math
import os
import stat
import sys
from collections import Counter
from typing import IO, Iterable, Iterator

import msgspec

from tracing import (
    Alt, AnyEvent, Backtrack, Capture, GpuSample, NodeOpen, RunEnd, RunStart, Token, TokenKind, TraceFile,
    TraceFormatError, display_text, read_trace,
)
from tracing.fileformat import lost_events

from guidance_tui import exit_codes
from guidance_tui.exit_codes import CliError

_KIND_NAMES = {k: k.name.lower() for k in TokenKind}
_KIND_BY_NAME = {v: k for k, v in _KIND_NAMES.items()}
_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


# -- reading -----------------------------------------------------------------
def _load(path: str) -> TraceFile:
    """Read a trace file; user errors become one-line :class:`CliError` s, truncation a warning."""
    try:
        tf = read_trace(path)
    except TraceFormatError as e:
        raise CliError(str(e)) from None
    damage = tf.warning
    if damage and not tf.events:
        raise CliError(damage)  # nothing readable
    if damage:
        print(f"guidance-tui: warning: {damage}", file=sys.stderr)
    if tf.dropped_bytes > 0:
        print(f"guidance-tui: warning: {path}: {_truncation_note(tf)}", file=sys.stderr)
    return tf


def _truncation_note(tf: TraceFile) -> str:
    return f"truncated: {tf.dropped_bytes} bytes of an incomplete last frame dropped"


# -- info --------------------------------------------------------------------
def summarize(tf: TraceFile, path: str = "") -> list[str]:
    """The lines ``info`` prints for a trace."""
    kinds: Counter[TokenKind] = Counter()
    backtracks = captures = nodes = 0
    start: RunStart | None = None
    end: RunEnd | None = None
    t_min = t_max = None
    for ev in tf.events:
        if isinstance(ev, Token):
            kinds[ev.kind] += 1
        elif isinstance(ev, Backtrack):
            backtracks += 1
        elif isinstance(ev, Capture):
            captures += 1
        elif isinstance(ev, NodeOpen):
            nodes += 1
        elif isinstance(ev, RunStart):
            start = start or ev
        elif isinstance(ev, RunEnd):
            end = ev
        if ev.t_us >= 0:
            t_min = ev.t_us if t_min is None else min(t_min, ev.t_us)
            t_max = ev.t_us if t_max is None else max(t_max, ev.t_us)
    n_tokens = sum(kinds.values())
    rows: list[tuple[str, str]] = []
    if path:
        rows.append(("file", path))
    rows += [
        ("format", f"version {tf.version}"),
        ("events", str(len(tf.events))),
        ("tokens", f"{n_tokens} (prompt {kinds[TokenKind.PROMPT]}, generated {kinds[TokenKind.GENERATED]}, "
                   f"forced {kinds[TokenKind.FORCED]})"),
        ("backtracks", str(backtracks)),
        ("captures", str(captures)),
        ("nodes", str(nodes)),
        ("duration", "unknown" if t_min is None else _duration((t_max - t_min) / 1e6)),
        ("model", (start.model or "-") if start else "unknown (no run start)"),
        ("backend", (start.backend or "-") if start else "unknown (no run start)"),
        ("script", (start.script or "-") if start else "unknown (no run start)"),
        ("status", end.status if end else "incomplete (no run end)"),
    ]
    if end is not None and end.error:
        rows.append(("error", _one_line(end.error)))
    if tf.skipped:
        rows.append(("damaged", _damage_row(tf)))
    if tf.dropped_bytes > 0:
        rows.append(("warning", _truncation_note(tf)))
    width = max(len(k) for k, _ in rows) + 1
    return [f"{k + ':':<{width}} {v}" for k, v in rows]


def _damage_row(tf: TraceFile) -> str:
    skips = [d for d in tf.skipped if d.resumed is not None]
    parts = []
    if skips:
        parts.append(f"{len(skips)} part{'s' if len(skips) != 1 else ''} skipped (first at byte {skips[0].offset}), "
                     f"{lost_events(skips)}")
    if tf.skipped[-1].resumed is None:
        parts.append(f"unreadable from byte {tf.skipped[-1].offset} on")
    return "; ".join(parts)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.3f} s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{int(minutes)} min {sec:.1f} s"
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours} h {minutes} min {int(sec)} s"


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return " / ".join(lines) if lines else ""


def cmd_info(args) -> int:
    tf = _load(args.file)
    print("\n".join(summarize(tf, args.file)))
    return 0


# -- export ------------------------------------------------------------------
def _plain(value):
    """A JSON-ready copy of one field value (see the module docstring for the rules)."""
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, TokenKind):
        return _KIND_NAMES[value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, msgspec.Struct):
        return _struct_dict(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _struct_dict(obj: msgspec.Struct) -> dict:
    out: dict = {}
    for name in obj.__struct_fields__:
        value = getattr(obj, name)
        out[name] = _plain(value)
        if name == "bytes":
            out["text"] = display_text(bytes(value))
    return out


def event_to_json(ev: AnyEvent) -> dict:
    """One event as the dict that ``export --format jsonl`` writes on one line."""
    out = {"type": type(ev).__struct_config__.tag, "seq": ev.seq, "t_us": ev.t_us}
    for k, v in _struct_dict(ev).items():
        out.setdefault(k, v)
    return out


def iter_jsonl(events: Iterable[AnyEvent]) -> Iterator[bytes]:
    """Encoded JSONL lines (each ending in a newline)."""
    enc = msgspec.json.Encoder()
    for ev in events:
        yield enc.encode(event_to_json(ev)) + b"\n"


def _unplain_struct_list(items: list, fields: tuple[str, ...]) -> list:
    # Alt and GpuSample are array-like Structs: rebuild their arrays by field order.
    return [[item[f] for f in fields] if isinstance(item, dict) else item for item in items]


def json_to_event(obj: dict) -> AnyEvent:
    """Inverse of :func:`event_to_json`."""
    obj = dict(obj)
    obj.pop("text", None)
    if obj.get("type") == "token":
        if isinstance(obj.get("kind"), str):
            obj["kind"] = int(_KIND_BY_NAME[obj["kind"]])
        obj["top"] = _unplain_struct_list(obj.get("top", []), Alt.__struct_fields__)
        obj["top_allowed"] = _unplain_struct_list(obj.get("top_allowed", []), Alt.__struct_fields__)
    elif obj.get("type") == "metric":
        obj["gpus"] = _unplain_struct_list(obj.get("gpus", []), GpuSample.__struct_fields__)
    # strict=False reads "NaN"/"Infinity" into float fields (only there) and base64 into bytes.
    return msgspec.convert(obj, AnyEvent, strict=False)


def read_jsonl(lines: Iterable[bytes | str]) -> list[AnyEvent]:
    """Events back from ``export --format jsonl`` output (one JSON object per line)."""
    return [json_to_event(msgspec.json.decode(line)) for line in lines if line.strip()]


def _write_all(fh: IO[bytes], events: Iterable[AnyEvent]) -> None:
    batch: list[bytes] = []
    for line in iter_jsonl(events):
        batch.append(line)
        if len(batch) >= 1024:
            fh.write(b"".join(batch))
            batch.clear()
    fh.write(b"".join(batch))


def _check_output(args) -> os.stat_result | None:
    """The output's stat when it exists; a one-line error when it must not be written."""
    out = args.output
    try:
        st = os.stat(out)
    except OSError:
        return None  # a new file (or an unusable path: writing it says why)
    try:
        src = os.stat(args.file)
        same = (src.st_dev, src.st_ino) == (st.st_dev, st.st_ino)
    except OSError:
        same = False
    if same:
        raise CliError(f"{out}: is the trace being exported; choose another output file", exit_codes.USAGE)
    if stat.S_ISDIR(st.st_mode):
        raise CliError(f"{out}: is a directory")
    if stat.S_ISREG(st.st_mode) and not getattr(args, "force", False) and _is_trace(out):
        raise CliError(f"{out}: is a trace file; pass --force to replace it with the export", exit_codes.USAGE)
    return st


def _is_trace(path: str) -> bool:
    from tracing.fileformat import MAGIC

    try:
        with open(path, "rb") as fh:
            return fh.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def cmd_export(args) -> int:
    if args.format != "jsonl" or getattr(args, "to", None):  # otlp, --to, html, svg
        from guidance_tui.cli import reach_commands

        if args.format in ("html", "svg"):
            return reach_commands.export_picture(args)
        return reach_commands.export_otlp(args)
    tf = _load(args.file)
    if args.output and args.output != "-":
        st = _check_output(args)
        if st is not None and not stat.S_ISREG(st.st_mode):  # /dev/null, a named pipe: write through it
            try:
                with open(args.output, "wb") as fh:
                    _write_all(fh, tf.events)
            except BrokenPipeError:
                pass
            except OSError as e:
                raise CliError(f"{args.output}: cannot write ({e.strerror or e})") from None
            return 0
        tmp = f"{args.output}.tmp{os.getpid()}"
        try:
            with open(tmp, "wb") as fh:
                _write_all(fh, tf.events)
            os.replace(tmp, args.output)
        except OSError as e:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise CliError(f"{args.output}: cannot write ({e.strerror or e})") from None
        return 0
    out = getattr(sys.stdout, "buffer", None)
    try:
        if out is None:  # a text-only stdout (some test harnesses)
            for line in iter_jsonl(tf.events):
                sys.stdout.write(line.decode("utf-8"))
        else:
            _write_all(out, tf.events)
        sys.stdout.flush()
    except BrokenPipeError:
        # `export … | head`: stop quietly, and keep Python from complaining
        # again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 0
    return 0
