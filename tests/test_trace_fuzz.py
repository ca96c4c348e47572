"""Fuzzing the trace readers: mutated traces of every format, every reader path, one verdict.

Deterministic (fixed seeds) and a few seconds long.  Real traces (format 1
from tests/data, formats 2 and 3 recorded from the embedded model) and
synthetic ones (formats 2, 3 and 4, with an EVENT frame and text that needed
escaping) are mutated structure-aware (one field of a frame's payload, the
frame re-framed with a correct length and checksum, so the semantic checks
are what must catch it) and byte by byte (flips, overwrites, cuts,
insertions, deletions, a frame's length, swapped frames).  Each result goes
through read_trace (info, export), TraceLoader (replay) and a FrameDecoder fed
in random chunks as a live follower does, and the store, the tree and the
JSON export use what they kept.  Allowed: a one-line TraceFormatError, or the
same events and the same damage (offsets, events lost, dropped bytes) from
every path.  ``scripts/fuzz_traces.py`` runs the same for a million inputs.
"""

from __future__ import annotations

import random

import pytest
from _trace_support import (
    all_paths, assert_consistent, check_one, fuzz_sources, mutate, mutate_bytes, mutate_structure,
)

SOURCES = fuzz_sources()


@pytest.mark.parametrize("name, data", SOURCES, ids=[n for n, _ in SOURCES])
def test_every_source_reads_cleanly_the_same_in_every_path(tmp_path, name, data):
    verdict = assert_consistent(all_paths(data, random.Random(0), tmp_path, deep=True))
    assert verdict.error is None and verdict.skipped == [] and verdict.dropped == 0 and verdict.events


@pytest.mark.parametrize("name, data", SOURCES, ids=[n for n, _ in SOURCES])
@pytest.mark.parametrize("kind", ["structure", "bytes", "mixed"])
def test_mutated_traces_get_one_verdict_from_every_reader(tmp_path, name, data, kind):
    mutator = {"structure": mutate_structure, "bytes": mutate_bytes, "mixed": mutate}[kind]
    rng = random.Random(f"{name}/{kind}")
    outcomes = {"error": 0, "damaged": 0, "clean": 0}
    for i in range(40):
        damaged = mutator(data, rng)
        verdict = check_one(damaged, rng, tmp_path, deep=i % 4 == 0)
        outcomes["error" if verdict.error else "damaged" if verdict.skipped or verdict.dropped else "clean"] += 1
    assert outcomes["damaged"] > 0, outcomes  # the mutations do reach the frames
