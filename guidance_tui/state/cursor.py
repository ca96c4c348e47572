"""The timeline cursor: which seq of the store the screen shows.

Pure logic over a :class:`TokenIndex`, testable without Textual.  The screen
always renders "the store up to ``seq``".  ``following`` keeps ``seq`` at the
end as events arrive (live mode); any scrub stops following, :meth:`end`
resumes it.  Playback advances ``seq`` at the recorded pace times ``speed``.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass

from guidance_tui.state.token_index import TokenIndex

SPEEDS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 50.0, 200.0)
LOW_PROB = 0.1  # "low probability" for the jump key
MAX_GAP_US = 1_000_000  # playback skips idle gaps longer than this


@dataclass(frozen=True)
class At:
    """What every pane is shown: the store up to ``seq``, with ``token`` (an
    index into the token columns, -1 for none) selected.  ``mode`` is live
    (the writer is running), replay or loading; ``status`` the run's (see
    stats.run_status); ``scroll`` tells the token stream where to scroll:
    "end", "follow", "selected" or None (leave it)."""

    seq: int
    token: int
    mode: str = "replay"
    scroll: str | None = None
    status: str | None = None


@dataclass
class Cursor:
    index: TokenIndex
    seq: int = -1
    following: bool = True
    playing: bool = False
    speed: float = 1.0
    end_seq: int = -1  # last seq the UI has ingested
    _play_wall: float = 0.0
    _play_t: int = 0

    # -- growth --------------------------------------------------------
    def grow(self, end_seq: int) -> bool:
        """The UI ingested up to ``end_seq``; returns True when the cursor moved."""
        self.end_seq = end_seq
        if self.following and self.seq != end_seq and not self.playing:
            self.seq = end_seq
            return True
        return False

    @property
    def at_end(self) -> bool:
        return self.seq >= self.end_seq

    # -- moves (each stops following and playback, except end/play) -----
    def _set(self, seq: int, *, follow: bool = False) -> bool:
        seq = max(-1, min(seq, self.end_seq))
        self.following = follow
        moved = seq != self.seq
        self.seq = seq
        return moved

    def seek(self, seq: int) -> bool:
        self.playing = False
        return self._set(seq)

    def step(self, n: int) -> bool:
        """Move ``n`` tokens forward (negative: back)."""
        idx = self.index
        self.playing = False
        if idx.n == 0:
            return self._set(self.seq)
        cur = idx.token_at(self.seq)
        on_token = cur >= 0 and idx.seqs[cur] == self.seq
        if n < 0:
            target = cur + n + (0 if on_token else 1)
        else:
            target = cur + n
        target = max(0, min(idx.n - 1, target))
        if target >= idx.n - 1 and n > 0 and idx.seqs[idx.n - 1] <= self.seq:
            return self._set(self.end_seq)  # past the last token: the end of the run
        return self._set(idx.seqs[target])

    def home(self) -> bool:
        self.playing = False
        idx = self.index
        return self._set(idx.seqs[0] if idx.n else 0)

    def end(self) -> bool:
        """Jump to the end and follow it again."""
        self.playing = False
        return self._set(self.end_seq, follow=True)

    def next_backtrack(self) -> bool:
        bts = self.index.bt_seqs
        k = bisect.bisect_right(bts, self.seq)
        if k < len(bts) and bts[k] <= self.end_seq:
            self.playing = False
            return self._set(bts[k])
        return False

    def prev_backtrack(self) -> bool:
        bts = self.index.bt_seqs
        k = bisect.bisect_left(bts, self.seq)
        if k > 0:
            self.playing = False
            return self._set(bts[k - 1])
        return False

    def next_low_prob(self, threshold: float = LOW_PROB, step: int = 1) -> bool:
        idx = self.index
        cur = idx.token_at(self.seq)
        i = idx.find_low_prob(cur + 1 if step > 0 else cur - 1, threshold, step)
        if i is None or idx.seqs[i] > self.end_seq:
            return False
        self.playing = False
        return self._set(idx.seqs[i])

    # -- playback ------------------------------------------------------
    def faster(self) -> float:
        i = min(len(SPEEDS) - 1, _speed_index(self.speed) + 1)
        self.speed = SPEEDS[i]
        self._rebase()
        return self.speed

    def slower(self) -> float:
        i = max(0, _speed_index(self.speed) - 1)
        self.speed = SPEEDS[i]
        self._rebase()
        return self.speed

    def toggle_play(self, now: float) -> bool:
        """Start or stop playback; starting at the end replays from the beginning."""
        if self.playing:
            self.playing = False
            return False
        if self.at_end or self.index.n == 0 or self.seq >= self.index.seqs[self.index.n - 1]:
            self.home()
        self.playing = True
        self.following = False
        self._play_wall = now
        self._play_t = self._t_of(self.seq)
        return True

    def _rebase(self) -> None:
        if self.playing:
            self._play_wall = time.monotonic()
            self._play_t = self._t_of(self.seq)

    def _t_of(self, seq: int) -> int:
        store = self.index.store
        return store[seq].t_us if 0 <= seq < len(store) else 0

    def tick(self, now: float) -> bool:
        """Advance playback to ``now``; returns True when the cursor moved."""
        if not self.playing:
            return False
        store = self.index.store
        target_t = self._play_t + int((now - self._play_wall) * 1e6 * self.speed)
        seq = self.seq
        end = self.end_seq
        # Walk forward; events are few per frame at recorded pace.
        moved = False
        while seq < end:
            t_next = store[seq + 1].t_us
            if t_next - self._t_of(seq) > MAX_GAP_US and t_next > target_t:
                # an idle gap (model loading, a slow tool): skip it
                self._play_t += t_next - self._t_of(seq) - MAX_GAP_US // 10
                target_t = self._play_t + int((now - self._play_wall) * 1e6 * self.speed)
            if t_next > target_t:
                break
            seq += 1
            moved = True
        if moved:
            self.seq = seq
        if seq >= end:
            self.playing = False
            if self.index.store.run_end() is None:
                self.following = True  # caught up with a live run: follow it
        return moved


def _speed_index(speed: float) -> int:
    return min(range(len(SPEEDS)), key=lambda i: abs(SPEEDS[i] - speed))
