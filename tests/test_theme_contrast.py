"""Every built-in Textual theme keeps the token stream's colour scales readable.

The palette is built the way the app builds it (``ThemeColors.from_variables``
over the running app's CSS variables), and measured with our own WCAG 2
arithmetic, not the palette's:

* token text on every token background: contrast ratio >= 4.5 (WCAG AA);
* every probability (and latency) background against the pane: contrast ratio
  >= 1.25.  A luminance difference, not a hue one, so that likely tokens do not
  vanish for readers who do not tell green from grey;
* the scales stay ordered and distinct: neighbouring buckets differ by a
  visible CIE76 ΔE >= 3 (the just-noticeable difference is about 2.3), the two
  ends by ΔE >= 15; no step comes noticeably (a JND) closer to the low end than
  the step before it; and the end meant to catch the eye (unlikely, slow)
  stands out from the pane more than the quiet end (likely, fast), by contrast
  ratio and by ΔE.
"""

from __future__ import annotations

import asyncio
import math

import pytest
from textual.app import App
from textual.color import Color
from textual.theme import BUILTIN_THEMES

from guidance_tui.widgets.colors import BUCKETS, Palette, ThemeColors

PROBABILITIES = (0.0, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
TEXT_CONTRAST = 4.5
PANE_CONTRAST = 1.25
STEP_DELTA_E = 3.0
JND = 2.3  # CIE76 just-noticeable difference
ENDS_DELTA_E = 15.0
THEMES = sorted(BUILTIN_THEMES)


# -- measurement (independent of the code under test) ---------------------------
def rgb(color: str | Color) -> tuple[int, int, int]:
    c = Color.parse(color) if isinstance(color, str) else color
    assert c.ansi is None and c.a == 1, f"{color!r} is not a plain opaque RGB colour"
    return c.r, c.g, c.b


def luminance(color) -> float:
    """WCAG 2 relative luminance of an sRGB colour."""
    def lin(v: int) -> float:
        v /= 255
        return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4

    r, g, b = rgb(color)
    return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b)


def contrast(a, b) -> float:
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def lab(color) -> tuple[float, float, float]:
    """CIE L*a*b* (D65)."""
    def lin(v: int) -> float:
        v /= 255
        return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4

    r, g, b = (lin(v) for v in rgb(color))
    x = (0.4124564 * r + 0.3575761 * g + 0.1804375 * b) / 0.95047
    y = 0.2126729 * r + 0.7151522 * g + 0.0721750 * b
    z = (0.0193339 * r + 0.1191920 * g + 0.9503041 * b) / 1.08883

    def f(t: float) -> float:
        return t ** (1 / 3) if t > (6 / 29) ** 3 else t / (3 * (6 / 29) ** 2) + 4 / 29

    return 116 * f(y) - 16, 500 * (f(x) - f(y)), 200 * (f(y) - f(z))


def delta_e(a, b) -> float:
    return math.dist(lab(a), lab(b))


def test_the_measurements_match_the_wcag_examples():
    assert contrast("#000000", "#FFFFFF") == pytest.approx(21.0)
    assert contrast("#777777", "#FFFFFF") == pytest.approx(4.48, abs=0.01)
    assert luminance("#FF0000") == pytest.approx(0.2126)
    assert lab("#FFFFFF") == pytest.approx((100, 0, 0), abs=0.01)


# -- the palettes, built as the app builds them ----------------------------------
@pytest.fixture(scope="module")
def palettes() -> dict[str, tuple[ThemeColors, Palette]]:
    async def collect():
        out = {}
        app = App()
        async with app.run_test() as pilot:
            for name in THEMES:
                app.theme = name
                await pilot.pause()
                v = app.get_css_variables()
                dark = app.current_theme.dark if app.current_theme is not None else True
                try:
                    tc = ThemeColors.from_variables(v, dark, background=v.get("background"))
                    out[name] = (tc, Palette(tc))
                except Exception as e:  # reported by each test of that theme
                    out[name] = e
        return out

    built = asyncio.run(collect())

    class Built(dict):
        def __getitem__(self, name):
            value = super().__getitem__(name)
            if isinstance(value, Exception):
                raise AssertionError(f"{name}: the palette cannot be built: {type(value).__name__}: {value}")
            return value

    return Built(built)


def prob_bg(pal: Palette, p: float) -> str:
    return pal.background("probability", 1, p, 0, 0.0)


def text_on(pal: Palette, bg: str | None, kind: int = 1) -> str:
    style = pal.token_style(bg, kind)
    return style.color.triplet.hex.upper()


def test_every_builtin_theme_is_covered():
    assert {"textual-dark", "textual-light", "ansi-dark", "ansi-light"} <= set(THEMES)
    assert len(THEMES) >= 20


@pytest.mark.parametrize("theme", THEMES)
def test_token_text_is_readable_on_every_probability_background(palettes, theme):
    tc, pal = palettes[theme]
    bad = []
    for p in PROBABILITIES:
        bg = prob_bg(pal, p)
        ratio = contrast(text_on(pal, bg), bg)
        if ratio < TEXT_CONTRAST:
            bad.append(f"p={p}: {text_on(pal, bg)} on {bg} = {ratio:.2f}")
    assert not bad, f"{theme}: text contrast below {TEXT_CONTRAST}: " + "; ".join(bad)


@pytest.mark.parametrize("theme", THEMES)
def test_probability_backgrounds_stand_out_from_the_pane(palettes, theme):
    tc, pal = palettes[theme]
    pane = tc.background
    bad = [f"p={p}: {prob_bg(pal, p)} = {contrast(prob_bg(pal, p), pane):.2f}"
           for p in PROBABILITIES if contrast(prob_bg(pal, p), pane) < PANE_CONTRAST]
    assert not bad, f"{theme}: against the pane {pane.hex}, below {PANE_CONTRAST}: " + "; ".join(bad)


def _check_scale(name: str, colours: list[str], pane: Color, most_salient: int) -> list[str]:
    problems = []
    for i, (a, b) in enumerate(zip(colours, colours[1:])):
        if delta_e(a, b) < STEP_DELTA_E:
            problems.append(f"{name} buckets {i}-{i + 1}: {a} vs {b}, ΔE {delta_e(a, b):.1f}")
    from_low = [delta_e(colours[0], c) for c in colours]
    for i in range(1, len(colours)):
        if from_low[i] <= from_low[i - 1] - JND:
            problems.append(f"{name} bucket {i} doubles back towards bucket 0 "
                            f"(ΔE {from_low[i]:.1f}, bucket {i - 1}: {from_low[i - 1]:.1f})")
    if delta_e(colours[0], colours[-1]) < ENDS_DELTA_E:
        problems.append(f"{name} ends: ΔE {delta_e(colours[0], colours[-1]):.1f}")
    loud, quiet = colours[most_salient], colours[-1 - most_salient]
    if not (contrast(loud, pane) > contrast(quiet, pane) and delta_e(loud, pane) > delta_e(quiet, pane)):
        problems.append(f"{name}: the step meant to stand out ({loud}) does not stand out more than the "
                        f"quiet end ({quiet}) against the pane {pane.hex}")
    return problems


@pytest.mark.parametrize("theme", THEMES)
def test_the_probability_scale_is_ordered_and_its_steps_are_distinct(palettes, theme):
    tc, pal = palettes[theme]
    colours = [prob_bg(pal, (i + 0.5) / BUCKETS) for i in range(BUCKETS)]
    assert len(set(colours)) == BUCKETS
    # the probes land in the buckets they should, low to high
    assert [pal.prob_bucket(p) for p in PROBABILITIES] == sorted(pal.prob_bucket(p) for p in PROBABILITIES)
    problems = _check_scale("probability", colours, tc.background, most_salient=0)
    assert not problems, f"{theme}: " + "; ".join(problems)


@pytest.mark.parametrize("theme", THEMES)
def test_the_latency_scale_is_readable_and_ordered_too(palettes, theme):
    tc, pal = palettes[theme]
    pane = tc.background
    problems = _check_scale("latency", pal.lat_bg, pane, most_salient=-1)
    for i, bg in enumerate(pal.lat_bg):
        if contrast(text_on(pal, bg), bg) < TEXT_CONTRAST:
            problems.append(f"latency bucket {i}: text {contrast(text_on(pal, bg), bg):.2f}")
        if contrast(bg, pane) < PANE_CONTRAST:
            problems.append(f"latency bucket {i}: against the pane {contrast(bg, pane):.2f}")
    assert not problems, f"{theme}: " + "; ".join(problems)


@pytest.mark.parametrize("theme", THEMES)
def test_forced_unknown_kind_and_selected_tokens_are_readable(palettes, theme):
    tc, pal = palettes[theme]
    pane = tc.background
    problems = []
    cases = {
        "forced (probability view)": (pal.background("probability", 2, 1.0, 0, 0.0), 2),
        "unknown probability": (pal.background("probability", 1, float("nan"), 0, 0.0), 1),
        "kind: generated": (pal.background("kind", 1, 1.0, 0, 0.0), 1),
        "kind: forced": (pal.background("kind", 2, 1.0, 0, 0.0), 2),
        "no background": (None, 1),
    }
    for label, (bg, kind) in cases.items():
        ratio = contrast(text_on(pal, bg, kind), bg or pane)
        if ratio < TEXT_CONTRAST:
            problems.append(f"{label}: {ratio:.2f}")
    forced = pal.background("probability", 2, 1.0, 0, 0.0)
    if contrast(forced, pane) < PANE_CONTRAST:
        problems.append(f"forced tokens against the pane: {contrast(forced, pane):.2f}")
    for label, style in (("selected token", pal.token_style(prob_bg(pal, 0.9), 1, selected=True)),
                         ("node label", pal.label)):
        ratio = contrast(style.color.triplet.hex, style.bgcolor.triplet.hex)
        if ratio < TEXT_CONTRAST:
            problems.append(f"{label}: {ratio:.2f}")
    assert not problems, f"{theme}: " + "; ".join(problems)


@pytest.mark.parametrize("theme", THEMES)
def test_every_style_the_palette_makes_is_a_plain_colour(palettes, theme):
    # ANSI themes name their colours ("ansi_blue"): the palette resolves them before blending.
    tc, pal = palettes[theme]
    for field in ("background", "foreground", "muted", "primary", "secondary", "accent", "success", "warning",
                  "error", "panel"):
        rgb(getattr(tc, field))
    for bg in [*pal.prob_bg, *pal.lat_bg, *pal.kind_bg.values(), pal.unknown_bg]:
        rgb(bg)
        style = pal.token_style(bg, 1, underline=True, struck=True)
        assert style.color is not None and style.bgcolor is not None


@pytest.mark.parametrize("theme", ["ansi-dark", "ansi-light"])
def test_ansi_themes_leave_the_pane_to_the_terminal(palettes, theme):
    # The pane is the terminal's own background ("ansi_default"): tokens without a background of
    # their own do not paint over it with a guess; the colour maths use Textual's terminal theme.
    tc, pal = palettes[theme]
    assert tc.native_background
    assert pal.token_style(None, 0).bgcolor.is_default
    assert pal.base.bgcolor.is_default
    assert not pal.token_style(prob_bg(pal, 0.5), 1).bgcolor.is_default
    assert not palettes["textual-dark"][0].native_background
    assert palettes["textual-dark"][1].token_style(None, 0).bgcolor.triplet.hex.upper() == "#121212"


def test_the_default_dark_theme_keeps_its_look(palettes):
    # textual-dark already met every bound: the repairs leave its scales exactly as they were.
    tc, pal = palettes["textual-dark"]
    assert pal.prob_bg == ["#662B33", "#67332C", "#673A26", "#663F21", "#64431C", "#5A431C", "#48401F",
                           "#393C22", "#2C3823", "#213424"]
    assert pal.lat_bg == ["#1D3223", "#283723", "#353B22", "#463F20", "#59431C", "#64431C", "#663E22",
                          "#673828", "#67302F", "#662736"]
    assert pal.kind_bg == {0: "#0A273C", 1: "#0A3C63", 2: "#75501C"}
    assert all(text_on(pal, bg) == tc.foreground.hex for bg in [*pal.prob_bg, *pal.lat_bg])
