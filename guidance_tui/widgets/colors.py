"""Token colours: probability, latency or kind as a background, theme-aware.

Every colour is a blend of a theme colour into the token stream's own
background, so the text stays readable in light and dark themes and a theme
change (``ctrl+p`` → theme) recolours everything.  Values are quantised into
buckets and the resulting Rich styles are cached: drawing a line costs dict
lookups, not colour maths.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from rich.style import Style
from textual.color import Color

COLOR_METRICS = ("probability", "latency", "kind")
UNDERLINE_METRICS = ("latency", "probability", "kind", "none")
BUCKETS = 10
LOW_PROB_UNDERLINE = 0.25  # underline "unlikely" tokens below this probability
SLOW_RATIO = 2.0  # underline tokens slower than this many times the median

KIND_NAMES = {0: "prompt", 1: "generated", 2: "forced"}


@dataclass(frozen=True)
class ThemeColors:
    """The handful of theme colours the token stream uses."""

    background: Color
    foreground: Color
    muted: Color
    primary: Color
    secondary: Color
    accent: Color
    success: Color
    warning: Color
    error: Color
    panel: Color
    dark: bool

    @classmethod
    def from_variables(cls, v: dict[str, str], dark: bool = True, background: str | None = None) -> "ThemeColors":
        def c(name: str, default: str) -> Color:
            try:
                return Color.parse(v.get(name, default))
            except Exception:
                return Color.parse(default)

        bg = c("surface", "#1e1e1e") if background is None else Color.parse(background)
        fg = c("foreground", "#e0e0e0")
        return cls(bg, fg, fg.blend(bg, 0.45), c("primary", "#0178d4"), c("secondary", "#004578"),
                   c("accent", "#fea62b"), c("success", "#4ebf71"), c("warning", "#fea62b"),
                   c("error", "#b93c5b"), c("panel", "#242f38"), dark)


def _mix(a: Color, b: Color, t: float) -> Color:
    return a.blend(b, max(0.0, min(1.0, t)))


class Palette:
    """Styles for tokens under the current theme."""

    def __init__(self, colors: ThemeColors) -> None:
        self.c = colors
        strength = 0.42 if colors.dark else 0.35
        bg = colors.background

        def tint(color: Color) -> Color:
            return bg.blend(color, strength)

        # probability: likely tokens get a faint green, unlikely ones an
        # increasingly strong yellow then red, so surprises stand out.
        self.prob_bg = []
        for i in range(BUCKETS):
            p = (i + 0.5) / BUCKETS
            col = _mix(colors.error, colors.warning, p * 2) if p < 0.5 else _mix(colors.warning, colors.success, p * 2 - 1)
            self.prob_bg.append(bg.blend(col, strength * (0.45 + 0.75 * (1 - p))).hex)
        # latency, as log2 of the ratio to the run's median: -1 (fast) .. +2 (slow)
        self.lat_bg = []
        for i in range(BUCKETS):
            r = i / (BUCKETS - 1)
            col = _mix(colors.success, colors.warning, r * 2) if r < 0.5 else _mix(colors.warning, colors.error, r * 2 - 1)
            self.lat_bg.append(bg.blend(col, strength * (0.45 + 0.75 * r)).hex)
        self.kind_bg = {0: tint(colors.secondary).hex, 1: tint(colors.primary).hex, 2: tint(colors.accent).hex}
        self.unknown_bg = tint(colors.panel).hex
        self.fg = colors.foreground.hex
        self.muted = colors.muted.hex
        self.faint = colors.foreground.blend(bg, 0.7).hex
        self.label = Style(color=colors.primary.get_contrast_text(1.0).hex, bgcolor=colors.primary.hex, bold=True)
        self.cursor = Style(color=colors.accent.hex, bgcolor=bg.hex, bold=True)
        self.base = Style(color=self.fg, bgcolor=bg.hex)
        self._styles: dict[tuple, Style] = {}
        self._plain: dict[tuple, Style] = {}

    # -- classification ------------------------------------------------
    def prob_bucket(self, p: float) -> int:
        if p != p:  # NaN: unknown
            return -1
        return max(0, min(BUCKETS - 1, int(p * BUCKETS)))

    @staticmethod
    def latency_bucket(latency_us: int, median: float) -> int:
        if latency_us <= 0 or median <= 0:
            return -1
        r = math.log2(latency_us / median)
        return max(0, min(BUCKETS - 1, int(round((r + 1) / 3 * (BUCKETS - 1)))))

    def background(self, metric: str, kind: int, prob: float, latency_us: int, median: float) -> str | None:
        if metric == "kind":
            return self.kind_bg.get(kind)
        if kind == 0:  # prompt text was not sampled: no probability, no latency
            return None
        if metric == "probability":
            if kind == 2:
                return self.kind_bg[2]
            b = self.prob_bucket(prob)
        else:
            b = self.latency_bucket(latency_us, median)
        if b < 0:
            return self.unknown_bg
        return (self.prob_bg if metric == "probability" else self.lat_bg)[b]

    @staticmethod
    def underlined(metric: str, kind: int, prob: float, latency_us: int, median: float) -> bool:
        if metric == "probability":
            return kind == 1 and prob == prob and prob < LOW_PROB_UNDERLINE
        if metric == "latency":
            return kind != 0 and median > 0 and latency_us > SLOW_RATIO * median
        if metric == "kind":
            return kind == 2
        return False

    # -- composed styles -----------------------------------------------
    def token_style(self, bg: str | None, kind: int, *, underline: bool = False, struck: bool = False,
                    selected: bool = False, faded: bool = False, part: int = 0) -> Style:
        """Style for one run of a token; ``part`` is its unit kind (text, space, bytes...)."""
        key = (bg, kind, underline, struck, selected, faded, part)
        st = self._styles.get(key)
        if st is None:
            st = self._styles[key] = self._make(*key)
        return st

    def plain_style(self, bg: str | None, kind: int, underline: bool) -> Style:
        """``token_style(bg, kind, underline=underline)``, with a lookup of its own (the hot path)."""
        st = self._plain.get((bg, kind, underline))
        if st is None:
            st = self._plain[(bg, kind, underline)] = self.token_style(bg, kind, underline=underline)
        return st

    def _make(self, bg, kind, underline, struck, selected, faded, part) -> Style:
        fg = self.fg
        if kind == 0:
            fg = self.muted if not faded else self.faint
        if part in (1, 2):  # whitespace glyphs
            fg = self.faint
        elif part in (3, 4):  # raw bytes, control pictures
            fg = self.muted
        if struck or faded:
            fg = self.faint
            if bg is not None:
                bg = Color.parse(bg).blend(self.c.background, 0.6).hex
        if selected:
            return Style(color=self.c.background.hex, bgcolor=self.c.accent.hex, bold=True,
                         italic=kind == 2, strike=struck, underline=underline)
        return Style(color=fg, bgcolor=bg or self.c.background.hex, italic=kind == 2 or part == 3,
                     underline=underline, strike=struck)


@lru_cache(maxsize=32)
def palette_for(colors: ThemeColors) -> Palette:
    return Palette(colors)
