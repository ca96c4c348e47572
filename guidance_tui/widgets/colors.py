"""Token colours: probability, latency or kind as a background, theme-aware.

Every colour is a blend of a theme colour into the token stream's own
background, so a theme change (``ctrl+p`` → theme) recolours everything.  A
blend alone does not keep every theme readable (a pale green on a light pane
vanishes; a theme's grey-blue text is dim on a red tint), so each scale is then
checked, in WCAG 2 contrast ratios, and repaired where it falls short: its
lightness is moved (CIE L*, hue and chroma kept) until every step stands out
from the pane and from its neighbour, and token text is darkened or lightened
until it reads on its background (at least 4.5:1).  Themes that already meet
those bounds (``textual-dark``, the default) keep exactly the blends.

Values are quantised into buckets and the resulting Rich styles are cached:
drawing a line costs dict lookups, not colour maths.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from rich.style import Style
from textual.color import BLACK, WHITE, Color, Lab, lab_to_rgb, rgb_to_lab

COLOR_METRICS = ("probability", "latency", "kind")
UNDERLINE_METRICS = ("latency", "probability", "kind", "none")
BUCKETS = 10
LOW_PROB_UNDERLINE = 0.25  # underline "unlikely" tokens below this probability
SLOW_RATIO = 2.0  # underline tokens slower than this many times the median

KIND_NAMES = {0: "prompt", 1: "generated", 2: "forced"}

TEXT_CONTRAST = 4.5  # WCAG AA for text, token text on any token background
# A token background against the pane, as a contrast ratio: at least PANE_CONTRAST
# for the least salient step, rising by PANE_CONTRAST_SPAN towards the most salient.
# A luminance bound, not a hue one, so that a step does not vanish for readers
# who do not tell green from grey.
PANE_CONTRAST = 1.3
PANE_CONTRAST_SPAN = 0.4
STEP_DELTA_E = 3.3  # CIE76 distance between neighbouring steps (2.3 is just noticeable)


# -- colour measures -------------------------------------------------------------
def luminance(color: Color) -> float:
    """WCAG 2 relative luminance of an opaque sRGB colour."""
    def lin(v: int) -> float:
        v /= 255
        return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4

    return 0.2126 * lin(color.r) + 0.7152 * lin(color.g) + 0.0722 * lin(color.b)


def contrast(a: Color, b: Color) -> float:
    """WCAG 2 contrast ratio, 1 to 21."""
    la, lb = luminance(a), luminance(b)
    return (max(la, lb) + 0.05) / (min(la, lb) + 0.05)


def delta_e(a: Color, b: Color) -> float:
    """CIE76 colour difference."""
    return math.dist(rgb_to_lab(a), rgb_to_lab(b))


def _with_lightness(color: Color, lab: Lab, lightness: float) -> Color:
    """``color`` at CIE ``lightness``, its a* and b* kept (clipped into sRGB)."""
    out = lab_to_rgb(Lab(max(0.0, min(100.0, lightness)), lab.a, lab.b))
    return Color(max(0, min(255, out.r)), max(0, min(255, out.g)), max(0, min(255, out.b)))


def _lighter_reads_better(against: Color) -> bool:
    """Whether moving towards white (rather than black) gets further from ``against``."""
    return contrast(WHITE, against) >= contrast(BLACK, against)


def _move_lightness(color: Color, lighter: bool, ok: Callable[[Color], bool], steps: int = 18) -> Color | None:
    """The least lightness change of ``color`` (towards white or black) for which ``ok`` holds, or None."""
    if ok(color):
        return color
    lab = rgb_to_lab(color)
    end = 100.0 if lighter else 0.0
    far = _with_lightness(color, lab, end)
    if not ok(far):
        return None
    lo, hi = 0.0, 1.0  # fractions of the way to ``end``: ok fails at lo, holds at hi
    for _ in range(steps):
        mid = (lo + hi) / 2
        if ok(_with_lightness(color, lab, lab.L + (end - lab.L) * mid)):
            hi = mid
        else:
            lo = mid
    return _with_lightness(color, lab, lab.L + (end - lab.L) * hi)


def readable_on(text: Color, background: Color, ratio: float = TEXT_CONTRAST) -> Color:
    """``text``, darkened or lightened as little as needed to reach ``ratio`` on ``background``."""
    if contrast(text, background) >= ratio:
        return text
    lighter = _lighter_reads_better(background)
    moved = _move_lightness(text, lighter, lambda c: contrast(c, background) >= ratio)
    if moved is not None:
        return moved
    return WHITE if lighter else BLACK


def _resolve(color: Color, under: Color, default: Color, terminal) -> Color:
    """An opaque RGB colour: ANSI colours through the terminal theme, translucent ones over ``under``."""
    if color.ansi is not None:
        if color.ansi < 0:  # "ansi_default": the terminal's own foreground or background
            return default
        r, g, b = terminal.ansi_colors[color.ansi]
        return Color(r, g, b)
    if color.a < 1:
        return under + color
    return color


def _terminal_theme(dark: bool):
    """The terminal theme Textual itself uses to show ANSI colours (App.ansi_theme_dark / _light)."""
    try:
        from textual._ansi_theme import ALABASTER, MONOKAI
    except ImportError:  # pragma: no cover - a private module; Rich's default is close enough
        from rich.terminal_theme import DEFAULT_TERMINAL_THEME as MONOKAI
        ALABASTER = MONOKAI
    return MONOKAI if dark else ALABASTER


@dataclass(frozen=True)
class ThemeColors:
    """The handful of theme colours the token stream uses, all opaque RGB.

    ``native_background`` is true when the theme's background is the terminal's
    own ("ansi_default", the ANSI themes): ``background`` is then only the best
    guess used for the colour maths, and the palette paints "default" instead.
    """

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
    native_background: bool = False

    @classmethod
    def from_variables(cls, v: dict[str, str], dark: bool = True, background: str | None = None,
                       terminal_theme=None) -> "ThemeColors":
        """From an app's ``get_css_variables()``.  ANSI colours ("ansi_red") are resolved through
        ``terminal_theme`` (a Rich TerminalTheme; default: the one Textual uses, dark or light)."""
        terminal = terminal_theme if terminal_theme is not None else _terminal_theme(dark)
        term_bg, term_fg = Color(*terminal.background_color), Color(*terminal.foreground_color)

        def parse(text: str | None, default: str) -> Color:
            try:
                return Color.parse(text if text is not None else default)
            except Exception:
                return Color.parse(default)

        raw_bg = parse(v.get("surface") if background is None else background, "#1e1e1e")
        bg = _resolve(raw_bg, term_bg, term_bg, terminal)  # a translucent pane: over the terminal's own

        def c(name: str, default: str) -> Color:
            return _resolve(parse(v.get(name), default), bg, term_fg, terminal)

        fg = _resolve(parse(v.get("foreground"), "#e0e0e0"), bg, term_fg, terminal)
        panel = _resolve(parse(v.get("panel"), "#242f38"), bg, bg, terminal)
        return cls(bg, fg, fg.blend(bg, 0.45), c("primary", "#0178d4"), c("secondary", "#004578"),
                   c("accent", "#fea62b"), c("success", "#4ebf71"), c("warning", "#fea62b"),
                   c("error", "#b93c5b"), panel, dark, native_background=raw_bg.ansi == -1)


def _mix(a: Color, b: Color, t: float) -> Color:
    return a.blend(b, max(0.0, min(1.0, t)))


def _repair_scale(colours: list[Color], pane: Color, salience: list[float]) -> list[Color]:
    """The scale with every step readable against the pane and distinct from its neighbours.

    ``salience`` (0 to 1) says how much each step should stand out.  First,
    every step gets at least ``PANE_CONTRAST + PANE_CONTRAST_SPAN * salience``
    against the pane, by moving its lightness away from the pane's (CIE L*,
    hue and chroma kept).  Then, from the least salient step up, a step closer
    than ``STEP_DELTA_E`` to the neighbour already placed has its lightness
    moved further from the pane's, as little as possible (a more salient step
    then stands out more, never less).  Steps that already meet the bounds are
    left exactly as they are.
    """
    away = _lighter_reads_better(pane)
    needs = [PANE_CONTRAST + PANE_CONTRAST_SPAN * s for s in salience]
    out = [_move_lightness(c, away, lambda x, need=need: contrast(x, pane) >= need) or c
           for c, need in zip(colours, needs)]
    order = sorted(range(len(out)), key=lambda i: salience[i])
    for prev, i in zip(order, order[1:]):
        if abs(prev - i) != 1:  # neighbours on the scale only
            continue
        colour, neighbour, need = out[i], out[prev], needs[i]

        def ok(c: Color) -> bool:
            return delta_e(c, neighbour) >= STEP_DELTA_E and contrast(c, pane) >= need

        if ok(colour):
            continue
        lab = rgb_to_lab(colour)
        sign = 1 if away else -1
        for k in range(1, 61):  # 0.5 L* at a time, away from the pane: a more salient step stands out more
            moved = _with_lightness(colour, lab, lab.L + sign * 0.5 * k)
            if ok(moved):
                out[i] = moved
                break
    return out


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
        prob = []
        for i in range(BUCKETS):
            p = (i + 0.5) / BUCKETS
            col = _mix(colors.error, colors.warning, p * 2) if p < 0.5 else _mix(colors.warning, colors.success, p * 2 - 1)
            prob.append(bg.blend(col, strength * (0.45 + 0.75 * (1 - p))))
        self.prob_bg = [c.hex for c in _repair_scale(prob, bg, [1 - (i + 0.5) / BUCKETS for i in range(BUCKETS)])]
        # latency, as log2 of the ratio to the run's median: -1 (fast) .. +2 (slow)
        lat = []
        for i in range(BUCKETS):
            r = i / (BUCKETS - 1)
            col = _mix(colors.success, colors.warning, r * 2) if r < 0.5 else _mix(colors.warning, colors.error, r * 2 - 1)
            lat.append(bg.blend(col, strength * (0.45 + 0.75 * r)))
        self.lat_bg = [c.hex for c in _repair_scale(lat, bg, [i / (BUCKETS - 1) for i in range(BUCKETS)])]
        # kinds: generated and forced tokens stand out from the pane (forced ones show in the
        # probability view too); prompt text is muted on a faint tint, as is an unknown probability.
        prompt, generated, forced = tint(colors.secondary), tint(colors.primary), tint(colors.accent)
        generated, forced = (_repair_scale([c], bg, [0.0])[0] for c in (generated, forced))
        self.kind_bg = {0: prompt.hex, 1: generated.hex, 2: forced.hex}
        self.unknown_bg = tint(colors.panel).hex
        # what paints "no background": the terminal's own under an ANSI theme
        self.pane = "default" if colors.native_background else bg.hex
        self.fg = colors.foreground.hex
        self.muted = colors.muted.hex
        self.faint = colors.foreground.blend(bg, 0.7).hex
        self._text_on: dict[str | None, str] = {}
        on_primary = colors.primary.get_contrast_text(1.0)
        if contrast(on_primary, colors.primary) < TEXT_CONTRAST:  # Textual guesses by brightness; measure
            on_primary = max((WHITE, BLACK), key=lambda c: contrast(c, colors.primary))
        self.label = Style(color=on_primary.hex, bgcolor=colors.primary.hex, bold=True)
        self.cursor = Style(color=colors.accent.hex, bgcolor=self.pane, bold=True)
        self.base = Style(color=self.text_on(None), bgcolor=self.pane)
        # a selected token: pane-coloured text on the accent, or the foreground where that reads better
        on_accent = max((bg, colors.foreground), key=lambda c: contrast(c, colors.accent))
        self.on_accent = readable_on(on_accent, colors.accent).hex
        self._styles: dict[tuple, Style] = {}
        self._plain: dict[tuple, Style] = {}

    def text_on(self, bg: str | None) -> str:
        """The token text colour on ``bg`` (``None``: the pane): the theme's foreground where it reads."""
        fg = self._text_on.get(bg)
        if fg is None:
            back = self.c.background if bg is None else Color.parse(bg)
            fg = self._text_on[bg] = readable_on(self.c.foreground, back).hex
        return fg

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
        fg = self.text_on(bg)
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
            return Style(color=self.on_accent, bgcolor=self.c.accent.hex, bold=True,
                         italic=kind == 2, strike=struck, underline=underline)
        return Style(color=fg, bgcolor=bg or self.pane, italic=kind == 2 or part == 3,
                     underline=underline, strike=struck)
