"""Run figures at a cursor position: status, token counts, speed, latency."""

from __future__ import annotations

from dataclasses import dataclass

from tracing import RunStart

from guidance_tui.state.token_index import TokenIndex


@dataclass(frozen=True)
class RunStats:
    status: str  # the run's, not the cursor's: see run_status
    tokens: int
    generated: int
    forced: int
    prompt: int
    backtracks: int  # up to the cursor
    tok_per_s: float | None  # generated + forced tokens per second of decoding
    ttft_s: float | None  # run start to first generated or forced token
    mean_latency_us: float | None  # over generated tokens
    backtracks_total: int = 0  # in the whole run so far, the cursor aside

    @property
    def forced_pct(self) -> float | None:
        sampled = self.generated + self.forced
        return 100.0 * self.forced / sampled if sampled else None


def run_status(store, writer: str) -> str:
    """What the run is now, wherever the cursor is: done, error or interrupted (its
    end is recorded), live (its writer is running), died (the writer is gone
    without an end), incomplete (a recording without an end, writer unknown),
    or empty.  ``writer`` is "live", "gone" or "none" (not known: a replay)."""
    end = store.run_end()
    if end is not None:
        return end.status
    if len(store) == 0 and writer != "live":
        return "empty"
    return {"live": "live", "gone": "died"}.get(writer, "incomplete")


def stats_at(index: TokenIndex, seq: int, status: str | None = None) -> RunStats:
    """Figures for the store up to ``seq``; ``status``: the run's (default: from its end, else incomplete)."""
    k = index.count_at(seq)
    gen, forced = index.cum_gen[k], index.cum_forced[k]
    sampled = gen + forced
    store = index.store
    ttft = rate = None
    fs = index.first_sampled
    if 0 <= fs < k:
        t_first = index.token(fs).t_us
        starts = store.seqs_of(RunStart)
        t0 = store[starts[0]].t_us if starts else store[0].t_us
        ttft = max(0, t_first - t0) / 1e6
        t_last = index.token(k - 1).t_us
        if sampled > 1 and t_last > t_first:
            rate = (sampled - 1) / ((t_last - t_first) / 1e6)
    mean = index.cum_gen_latency[k] / gen if gen else None
    status = status if status is not None else run_status(store, "none")
    return RunStats(status, k, gen, forced, k - sampled, index.backtracks_at(seq), rate, ttft, mean,
                    len(index.backtracks))
