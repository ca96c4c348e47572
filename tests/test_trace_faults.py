"""Bad input and faults around trace files: one line, never a traceback, nothing lost that can be kept.

Malformed column codes, a FIFO or device as the trace, damaged frames (the same
verdict from info, export and replay), a stdout that fails, export over its
own input, and text the trace writer cannot encode or a disk that fills up.
"""

from __future__ import annotations

import errno
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from _trace_support import all_paths, assert_consistent, frames, payload, replace_frame, version_of

from guidance_tui.cli import main
from tracing import (
    Capture, Message, Metric, NodeClose, NodeOpen, RunEnd, RunStart, Token, TraceStore, TraceWriter, decode_trace,
    encode_trace, read_trace,
)
from tracing.synthetic import synthetic_events

ROOT = Path(__file__).resolve().parent.parent


def fake_clock():
    t = iter(range(0, 10**15, 1_000_000))
    return lambda: next(t)


def stamped(events) -> list:
    store = TraceStore(clock=fake_clock())
    store.extend(events)
    return list(store.events())


@pytest.fixture(scope="module")
def events() -> list:
    return stamped(synthetic_events(1200, seed=3))  # several blocks


@pytest.fixture(scope="module")
def good(events) -> bytes:
    return encode_trace(events)


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def command(*argv, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "guidance_tui", *map(str, argv)], cwd=ROOT, capture_output=True,
                          timeout=kw.pop("timeout", 60), **kw)


def middle_block(data: bytes):
    blocks = [f for f in frames(data) if payload(data, f)[0] == 3]
    assert len(blocks) >= 3
    return blocks[len(blocks) // 2]


def with_codes(data: bytes, codes: str) -> tuple[bytes, int, int]:
    """The middle block's column codes replaced: (file, the block's offset, its events)."""
    fr = middle_block(data)
    obj = payload(data, fr)
    obj[3] = codes
    return replace_frame(data, fr, obj), fr.start, obj[1]


def assert_commands_keep_the_rest(capsys, path: Path, offset: int, kept: int) -> None:
    """info, export and replay all succeed with the good frames and warn, once, naming ``offset``."""
    warnings = []
    for argv in (("info", path), ("export", path), ("replay", path)):
        code, out, err = cli(capsys, *argv)
        assert code == 0, (argv, err)
        assert "Traceback" not in err
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("guidance-tui: warning: "), (argv, err)
        assert f"byte {offset}" in lines[0], (argv, err)
        warnings.append(lines[0])
        if argv[0] == "export":
            assert len(out.splitlines()) == kept
        if argv[0] == "info":
            assert f"events:     {kept}" in out or f"events: {kept}" in " ".join(out.split())
    assert len(set(warnings)) == 1, warnings  # the same words from every command


# -- 1. column codes ------------------------------------------------------------------------------
@pytest.mark.parametrize("codes", ["p" + "B" * 9, "B" * 9 + "L", "B" * 9 + "x", "BBBBBBBBB?", "B" * 8 + "QB",
                                   "B" * 11, "BBBBBBBBB"])
def test_column_codes_the_writer_never_writes_are_a_damaged_frame_in_every_reader(tmp_path, good, events, codes):
    data, offset, n = with_codes(good, codes)
    verdict = assert_consistent(all_paths(data, random.Random(1), tmp_path, deep=True))
    assert verdict.error is None
    assert [s[0] for s in verdict.skipped] == [offset]
    assert len(verdict.events) == len(events) - n


@pytest.mark.parametrize("codes", ["p" + "B" * 9, "B" * 9 + "L"])
def test_commands_on_bad_column_codes_warn_the_same_and_keep_the_other_frames(capsys, tmp_path, good, events,
                                                                              codes):
    data, offset, n = with_codes(good, codes)
    path = tmp_path / "codes.gtt"
    path.write_bytes(data)
    assert_commands_keep_the_rest(capsys, path, offset, len(events) - n)


# -- 2. not a regular file ----------------------------------------------------------------------------
@pytest.mark.parametrize("cmd", ["info", "export", "replay"])
def test_a_fifo_as_the_trace_is_refused_at_once(tmp_path, cmd):
    fifo = tmp_path / "pipe.gtt"
    os.mkfifo(fifo)
    start = time.monotonic()
    try:
        proc = command(cmd, fifo, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{cmd} hangs on a FIFO")
    assert time.monotonic() - start < 30
    err = proc.stderr.decode()
    assert proc.returncode == 1 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "not a regular file" in err and str(fifo) in err


@pytest.mark.parametrize("path", ["/dev/null", "/dev/zero"])
def test_a_device_as_the_trace_is_refused(capsys, path):
    for cmd in ("info", "export", "replay"):
        code, out, err = cli(capsys, cmd, path)
        assert code == 1 and out == ""
        assert len(err.splitlines()) == 1 and "not a regular file" in err


def test_a_fifo_is_refused_by_the_reader_without_opening_it_blocking(tmp_path):
    from guidance_tui.state.loader import TraceLoader
    from tracing import TraceFormatError

    fifo = tmp_path / "p.gtt"
    os.mkfifo(fifo)
    done = []

    def read() -> None:
        for reader in (read_trace, TraceLoader):
            with pytest.raises(TraceFormatError) as e:
                reader(fifo)
            done.append(str(e.value))

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(10)
    assert len(done) == 2, "a reader blocked on the FIFO"
    assert done[0] == done[1] and "not a regular file" in done[0]


# -- 3. damaged frames: one verdict, the good frames kept ---------------------------------------------
def test_a_flipped_byte_in_a_frame_skips_that_frame_in_every_command(capsys, tmp_path, good, events):
    fr = middle_block(good)
    n = payload(good, fr)[1]
    data = bytearray(good)
    data[(fr.body + fr.end) // 2] ^= 0x20
    path = tmp_path / "flip.gtt"
    path.write_bytes(bytes(data))
    verdict = assert_consistent(all_paths(bytes(data), random.Random(2), tmp_path, deep=True))
    assert verdict.skipped == [(fr.start, fr.end, n)]
    assert len(verdict.events) == len(events) - n
    assert_commands_keep_the_rest(capsys, path, fr.start, len(events) - n)
    code, out, err = cli(capsys, "info", path)
    assert f"{n} events lost" in err


def test_every_flipped_byte_anywhere_is_noticed_the_same_way(tmp_path, good):
    """Each of 40 single-byte flips: every reader reports it (a checksum per frame), the same way."""
    rng = random.Random(5)
    full = len(decode_trace(good).events)
    for _ in range(40):
        data = bytearray(good)
        at = rng.randrange(10, len(data))
        data[at] ^= 1 << rng.randrange(8)
        verdict = assert_consistent(all_paths(bytes(data), rng, tmp_path))
        assert verdict.error is not None or verdict.skipped or verdict.dropped, at
        if verdict.error is None:
            assert len(verdict.events) < full


def test_a_damaged_frame_length_resynchronises_on_the_next_intact_frame(tmp_path, good, events):
    fr = middle_block(good)
    n = payload(good, fr)[1]
    nxt = next(f for f in frames(good) if f.start == fr.end)
    data = bytearray(good)
    data[fr.start] ^= 0x04  # the length's low bits: the frame seems shorter or longer
    verdict = assert_consistent(all_paths(bytes(data), random.Random(3), tmp_path))
    assert verdict.skipped == [(fr.start, nxt.start, n)]
    assert len(verdict.events) == len(events) - n


def test_a_token_of_a_node_never_opened_is_noticed_by_every_reader(tmp_path, capsys):
    evs = stamped([RunStart(script="s.py"), NodeOpen(node_id=1, kind="gen"),
                   *[Token(node_id=1, pos=i, id=5, bytes=b"a") for i in range(600)],
                   Token(node_id=9, pos=600, id=5, bytes=b"a"),  # in the second block
                   NodeClose(node_id=1), *[Message(text=f"m{i}") for i in range(600)], RunEnd()])
    data = encode_trace(evs)
    blocks = frames(data)
    assert len(blocks) == 3
    path = tmp_path / "node.gtt"
    path.write_bytes(data)
    verdict = assert_consistent(all_paths(data, random.Random(4), tmp_path))
    n = payload(data, blocks[1])[1]
    assert [s[0] for s in verdict.skipped] == [blocks[1].start]
    assert len(verdict.events) == len(evs) - n
    assert_commands_keep_the_rest(capsys, path, blocks[1].start, len(evs) - n)


def test_a_format_2_file_stops_at_its_first_bad_frame_in_every_reader(tmp_path, events):
    from tracing.fileformat import FrameEncoder

    enc = FrameEncoder(version=2)
    data = bytearray(enc.header() + enc.encode_batch(events))
    assert version_of(data) == 2
    fr = middle_block(bytes(data))
    obj = payload(bytes(data), fr)
    obj[3] = "p" + obj[3][1:]
    data = replace_frame(bytes(data), fr, obj)
    verdict = assert_consistent(all_paths(data, random.Random(6), tmp_path))
    assert verdict.skipped == [(fr.start, None, None)]
    before = sum(payload(data, f)[1] for f in frames(data) if f.end <= fr.start)
    assert len(verdict.events) == before


def test_a_file_with_nothing_readable_is_an_error(capsys, tmp_path, good):
    fr = frames(good)[0]
    data = bytearray(good[:fr.end])
    data[fr.body + 3] ^= 0xFF
    path = tmp_path / "nothing.gtt"
    path.write_bytes(bytes(data))
    for cmd in ("info", "export", "replay"):
        code, out, err = cli(capsys, cmd, path)
        assert code == 1 and out == "" and len(err.splitlines()) == 1 and f"byte {fr.start}" in err


# -- 4. a stdout that fails ---------------------------------------------------------------------------
@pytest.mark.parametrize("cmd", ["info", "export", "replay"])
def test_a_full_stdout_is_one_line_and_exit_1(tmp_path, good, cmd):
    path = tmp_path / "t.gtt"
    path.write_bytes(good)
    with open("/dev/full", "wb") as full:
        proc = subprocess.run([sys.executable, "-m", "guidance_tui", cmd, str(path)], cwd=ROOT, stdout=full,
                              stderr=subprocess.PIPE, timeout=60)
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "No space left on device" in err


# -- 5. export over a trace ---------------------------------------------------------------------------
def test_export_onto_its_own_input_is_refused_and_the_trace_kept(capsys, tmp_path, good):
    path = tmp_path / "m.gtt"
    path.write_bytes(good)
    link = tmp_path / "same.gtt"
    os.link(path, link)
    for out in (path, link, tmp_path / "." / "m.gtt"):
        for force in ((), ("--force",)):
            code, stdout, err = cli(capsys, "export", path, "-o", out, *force)
            assert code == 2 and len(err.splitlines()) == 1 and "is the trace being exported" in err
            assert path.read_bytes() == good


def test_export_refuses_to_overwrite_another_trace_unless_forced(capsys, tmp_path, good):
    src = tmp_path / "a.gtt"
    src.write_bytes(good)
    other = tmp_path / "b.gtt"
    other.write_bytes(good[:-5])
    code, _, err = cli(capsys, "export", src, "-o", other)
    assert code == 2 and "--force" in err and len(err.splitlines()) == 1
    assert other.read_bytes() == good[:-5]
    code, _, err = cli(capsys, "export", src, "-o", other, "--force")
    assert code == 0
    assert other.read_bytes().startswith(b'{"type":"run_start"')
    plain = tmp_path / "old.jsonl"
    plain.write_text("old\n")
    assert cli(capsys, "export", src, "-o", plain)[0] == 0  # a JSONL file (not a trace) is replaced


def test_export_into_a_fifo_writes_through_it_instead_of_replacing_it(capsys, good, events, tmp_path):
    """A FIFO (like /dev/null or /dev/stdout, which a test must not risk) is written to, not replaced."""
    src = tmp_path / "a.gtt"
    src.write_bytes(good)
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    assert cli(capsys, "export", src, "-o", fifo)[0] == 0
    reader.join(10)
    assert got and len(got[0].splitlines()) == len(events)
    assert fifo.is_fifo()


# -- 6. the writer: text it cannot encode, a full disk -----------------------------------------------------
BAD_TEXT = "bad \udcff name \udcc3\udca9 and \ud800 lone"
BAD_SHOWN = "bad <0xFF> name é and \\ud800 lone"  # as token bytes show: see tracing.events.safe_text


def test_a_lone_surrogate_in_any_string_never_stops_the_writer(tmp_path):
    path = tmp_path / "s.gtt"
    store = TraceStore()
    writer = TraceWriter(path, store, interval=3600)
    store.append(RunStart(script=BAD_TEXT, argv=[BAD_TEXT, "ok"], info={BAD_TEXT: BAD_TEXT}))
    store.append(NodeOpen(node_id=1, kind="gen", name=BAD_TEXT, grammar=BAD_TEXT))
    store.append(Token(node_id=1, pos=0, id=3, bytes=b"x"))
    store.append(Message(text=BAD_TEXT))
    writer.drain()
    store.append(Capture(node_id=1, name=BAD_TEXT, value=BAD_TEXT))
    store.append(NodeClose(node_id=1, stop_reason=BAD_TEXT))
    store.extend(Message(text=f"after {i}") for i in range(1000))
    store.append(RunEnd(status="error", error=BAD_TEXT, traceback=BAD_TEXT))
    writer.close()
    assert writer.error is None
    got = read_trace(path).events
    assert len(got) == len(store)
    assert got[0].script == BAD_SHOWN and got[0].argv == [BAD_SHOWN, "ok"] and got[0].info == {BAD_SHOWN: BAD_SHOWN}
    assert (got[1].name, got[1].grammar) == (BAD_SHOWN, BAD_SHOWN)
    assert got[3].text == BAD_SHOWN and got[4].value == BAD_SHOWN and got[5].stop_reason == BAD_SHOWN
    assert got[-1].error == BAD_SHOWN and got[-2].text == "after 999"


def test_an_event_that_cannot_be_encoded_at_all_becomes_a_message_and_the_rest_is_kept(tmp_path):
    path = tmp_path / "big.gtt"
    store = TraceStore()
    with TraceWriter(path, store, interval=3600) as writer:
        store.append(Message(text="before"))
        store.append(Metric(cpu=1.0, ram_used=2**70, ram_total=1))  # past msgpack's integers
        store.extend(Message(text=f"after {i}") for i in range(10))
    assert writer.error is None
    got = read_trace(path).events
    assert len(got) == 12 and got[-1].text == "after 9"
    assert isinstance(got[1], Message) and "Metric" in got[1].text and "could not be recorded" in got[1].text


class FillingFile:
    """A file object that takes ``room`` bytes, then fails like a full disk."""

    def __init__(self, fh, room: int) -> None:
        self.fh, self.room = fh, room
        self.writes_after_full = 0

    def write(self, data: bytes) -> int:
        if len(data) > self.room:
            self.writes_after_full += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.fh.write(data)

    def __getattr__(self, name):
        return getattr(self.fh, name)


def test_a_full_disk_is_reported_at_once_with_the_path_and_writing_stops(tmp_path):
    path = tmp_path / "full.gtt"
    store = TraceStore()
    errors = []
    writer = TraceWriter(path, store, interval=0.01, on_error=errors.append)
    filling = FillingFile(writer._fh, 100_000)
    writer._fh = filling
    store.extend(synthetic_events(3000, seed=1))
    deadline = time.monotonic() + 20
    while not errors and time.monotonic() < deadline:
        time.sleep(0.01)
    assert errors, "the writer never said the disk was full"
    assert writer.error is errors[0]
    assert str(writer.error) == f"cannot write {path}: No space left on device"
    store.extend(Message(text="more") for _ in range(100))
    writer.close()  # never raises
    assert len(errors) == 1 and filling.writes_after_full == 1  # writing stopped at the first failure
    tf = read_trace(path)  # what was written is still a trace
    assert 0 < len(tf.events) < len(store)


def test_the_app_says_what_a_damaged_trace_lost_when_loading_ends(tmp_path, good):
    """A replay loads in the background; the damage found after the first screen is shown at the end."""
    import asyncio

    from guidance_tui.app import InspectorApp
    from guidance_tui.state.loader import TraceLoader

    fr = middle_block(good)
    data = bytearray(good)
    data[fr.end - 3] ^= 0x40
    path = tmp_path / "late.gtt"
    path.write_bytes(bytes(data))
    loader = TraceLoader(path)
    loader.load(50)
    assert not loader.done.is_set() and not loader.skipped  # the damage is further on
    want = decode_trace(bytes(data), str(path)).warning
    assert want and f"byte {fr.start}" in want

    async def run() -> None:
        app = InspectorApp(loader.store, loader=loader)
        async with app.run_test(size=(100, 32)) as pilot:
            for _ in range(250):
                if any(want == str(n.message) for n in app._notifications):
                    break
                await pilot.pause(0.02)
            assert any(want == str(n.message) and "damaged" in str(n.title) for n in app._notifications)

    asyncio.run(run())
    assert loader.warning == want and loader.error is None


def test_replay_in_a_terminal_opens_with_the_damage_as_its_startup_warning(capsys, monkeypatch, tmp_path, good,
                                                                           events):
    from guidance_tui.cli import app_commands

    fr = middle_block(good)
    data = bytearray(good)
    data[fr.body + 1] ^= 0x01
    path = tmp_path / "t.gtt"
    path.write_bytes(bytes(data))
    opened = []

    class FakeApp:
        startup_warning = ""

        def __init__(self, store, **options) -> None:
            self.store, self.options = store, options
            opened.append(self)

        def run(self) -> None:
            pass

    monkeypatch.setattr(app_commands, "_stdout_is_terminal", lambda: True)
    monkeypatch.setattr(app_commands, "_writer_of", lambda path: None)
    monkeypatch.setattr(app_commands, "make_app", FakeApp)
    code, out, err = cli(capsys, "replay", path)
    want = decode_trace(bytes(data), str(path)).warning
    assert code == 0 and opened and opened[0].startup_warning == want
    assert len(opened[0].store) == len(events) - payload(good, fr)[1]
    assert err.splitlines() == [f"guidance-tui: warning: {want}"]


def test_a_batch_the_writer_cannot_encode_is_reported_and_counted_as_missing_and_writing_goes_on(tmp_path):
    path = tmp_path / "gap.gtt"
    store = TraceStore()
    errors = []
    writer = TraceWriter(path, store, interval=3600, on_error=errors.append)
    store.extend(Message(text=f"a{i}") for i in range(10))
    writer.drain()
    real = writer._enc.encode_batch
    calls = []

    def failing_once(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("a bug in the encoder")
        return real(batch)

    writer._enc.encode_batch = failing_once
    store.extend(Message(text=f"b{i}") for i in range(7))
    writer.drain()  # lost
    store.extend(Message(text=f"c{i}") for i in range(5))
    writer.close()
    assert len(errors) == 1 and writer.error is errors[0] and not writer.failed
    assert str(path) in str(writer.error) and "RuntimeError: a bug in the encoder" in str(writer.error)
    tf = read_trace(path)
    assert [e.text for e in tf.events] == [f"a{i}" for i in range(10)] + [f"c{i}" for i in range(5)]
    assert [(d.lost, d.offset == d.resumed) for d in tf.skipped] == [(7, True)]
    assert "7 events missing before byte" in tf.warning


def test_record_of_a_script_with_a_latin_1_name_and_argument_keeps_every_event(tmp_path):
    """The runner's RunStart holds the script's path and argv as Python has them (lone surrogates):
    the writer records them as token bytes show, and nothing after them is lost."""
    script = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9.py"))
    script.write_text('import sys\nprint("bad \\udcff", len(sys.argv))\nprint("after")\n')
    out = tmp_path / "t.gtt"
    proc = subprocess.run([sys.executable, "-m", "guidance_tui", "record", os.fsencode(script), "-o", out, "-q",
                           "--", b"arg\xff"], cwd=ROOT, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    events = read_trace(out).events
    start, end = events[0], events[-1]
    assert start.script.endswith("/caf<0xE9>.py") and start.argv[1:] == ["arg<0xFF>"]
    assert [e.text for e in events if isinstance(e, Message)] == ["bad <0xFF> 2", "after"]
    assert isinstance(end, RunEnd) and end.status == "done"


@pytest.mark.parametrize("tries, budget", [(40, 1 << 28), (1 << 20, 2000)])
def test_the_search_for_an_intact_frame_is_bounded_and_still_one_verdict(tmp_path, monkeypatch, good, tries, budget):
    """A crafted run of false frame starts (each a valid-looking length and payload start, with a wrong
    checksum) after a damaged frame: the search gives up at its bound, the same way in every reader."""
    from tracing import fileformat

    monkeypatch.setattr(fileformat, "_RESYNC_TRIES", tries)
    monkeypatch.setattr(fileformat, "_RESYNC_BYTES", budget)
    fr = middle_block(good)
    false_start = b"\x30" + b"\x00" * 4 + b"\x9c\x03" + b"\x01" * 46  # length 48, a BLOCK's first bytes
    data = bytearray(good[:fr.end] + false_start * 100 + good[fr.end:])
    data[fr.body + 2] ^= 0x01
    for rng in (random.Random(7), random.Random(8)):
        verdict = assert_consistent(all_paths(bytes(data), rng, tmp_path))
        assert verdict.error is None and verdict.skipped[0][0] == fr.start
    monkeypatch.setattr(fileformat, "_RESYNC_TRIES", 1 << 20)
    monkeypatch.setattr(fileformat, "_RESYNC_BYTES", 1 << 28)
    unbounded = assert_consistent(all_paths(bytes(data), random.Random(9), tmp_path))
    assert unbounded.skipped == [(fr.start, fr.end + len(false_start) * 100, payload(good, fr)[1])]
