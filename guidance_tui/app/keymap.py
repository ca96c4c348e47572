"""Key bindings as data: the screen binds them, the footer, help screen and
command palette list them.  Every binding has an id, so a user keymap
(``App.set_keymap``) can remap any of them.  ``description`` is the footer's
short word; ``tooltip`` the help screen's sentence."""

from __future__ import annotations

from textual.binding import Binding

STEP = Binding.Group("step", compact=True)
JUMP = Binding.Group("backtrack", compact=True)


def _b(key: str, action: str, short: str, long: str, id: str, *, show: bool = True, priority: bool = False,
       key_display: str | None = None, group: Binding.Group | None = None) -> Binding:
    return Binding(key, action, short, show=show, key_display=key_display, priority=priority, tooltip=long,
                   id=id, group=group)


# (section shown in help, binding)
KEYMAP: list[tuple[str, Binding]] = [
    ("Timeline", _b("left", "step(-1)", "step", "Step back one token", "step-back", priority=True,
                    key_display="←", group=STEP)),
    ("Timeline", _b("right", "step(1)", "step", "Step forward one token", "step-forward", priority=True,
                    key_display="→", group=STEP)),
    ("Timeline", _b("shift+left", "step(-10)", "back 10", "Step back 10 tokens", "step-back-10",
                    priority=True, show=False)),
    ("Timeline", _b("shift+right", "step(10)", "forward 10", "Step forward 10 tokens", "step-forward-10",
                    priority=True, show=False)),
    ("Timeline", _b("pageup", "step(-100)", "back 100", "Step back 100 tokens", "step-back-100",
                    priority=True, show=False)),
    ("Timeline", _b("pagedown", "step(100)", "forward 100", "Step forward 100 tokens", "step-forward-100",
                    priority=True, show=False)),
    ("Timeline", _b("home", "home", "start", "Go to the first token", "home", priority=True, show=False)),
    ("Timeline", _b("end", "end", "end", "Go to the end (and follow a live run)", "end", priority=True,
                    show=False)),
    ("Timeline", _b("space", "play", "play", "Play / pause at the recorded pace", "play", priority=True,
                    key_display="␣")),
    ("Timeline", _b("plus,equals_sign", "speed(1)", "faster", "Play faster", "faster", key_display="+",
                    show=False)),
    ("Timeline", _b("minus", "speed(-1)", "slower", "Play slower", "slower", key_display="-", show=False)),
    ("Jump", _b("b", "backtrack(1)", "backtrack", "Next backtrack", "next-backtrack", group=JUMP)),
    ("Jump", _b("B", "backtrack(-1)", "backtrack", "Previous backtrack", "prev-backtrack", group=JUMP)),
    ("Jump", _b("l", "low_prob(1)", "low p", "Next low-probability token (p < 0.1)", "next-low-prob")),
    ("Jump", _b("L", "low_prob(-1)", "prev low p", "Previous low-probability token", "prev-low-prob",
                show=False)),
    ("View", _b("c", "cycle_color", "colour", "Colour by probability / latency / kind", "cycle-color")),
    ("View", _b("u", "cycle_underline", "underline", "Underline slow / unlikely / forced tokens, or none",
                "cycle-underline", show=False)),
    ("View", _b("x", "toggle_backtracked", "struck", "Backtracked tokens: struck through / hidden",
                "toggle-backtracked")),
    ("View", _b("w", "toggle_whitespace", "whitespace", "Visible whitespace", "toggle-whitespace", show=False)),
    ("View", _b("d", "toggle_detail", "detail", "Show / hide the token detail pane", "toggle-detail",
                show=False)),
    ("View", _b("escape", "clear_highlight", "clear", "Clear the node highlight and token pick",
                "clear-highlight", show=False)),
    ("Panes", _b("f", "focus_pane('tokens')", "tokens", "Focus the token stream", "focus-tokens", show=False)),
    ("Panes", _b("t", "focus_pane('tree')", "tree", "Focus the program tree", "focus-tree", show=False)),
    ("Panes", _b("k", "focus_pane('backtracks')", "backtracks", "Focus the backtrack list", "focus-backtracks",
                 show=False)),
    ("Panes", _b("o", "focus_pane('output')", "output", "Show the script's output", "focus-output",
                 show=False)),
    ("App", _b("question_mark", "help", "help", "Help: every key", "help", key_display="?")),
    ("App", _b("q", "quit", "quit", "Quit (stops a running script)", "quit")),
]

BINDINGS = [b for _, b in KEYMAP]

_KEY_NAMES = {"shift+left": "shift+←", "shift+right": "shift+→", "pageup": "PgUp", "pagedown": "PgDn",
              "home": "Home", "end": "End", "escape": "Esc", "␣": "space", "B": "shift+b", "L": "shift+l"}


def help_rows() -> list[tuple[str, str, str]]:
    """(section, keys, description) for the help screen."""
    rows = []
    for section, b in KEYMAP:
        keys = b.key_display or b.key
        rows.append((section, _KEY_NAMES.get(keys, keys), b.tooltip or b.description))
    return rows
