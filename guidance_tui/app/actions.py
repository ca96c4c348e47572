"""Every inspector action, once: the key bindings, the help screen (``?``) and
the command palette (``ctrl+p``) are all read from ``ACTIONS``.

An action's ``id`` is its binding id: a user keymap (``keymap.toml`` in the
config directory, see ``guidance_tui.config``) rebinds it by that id.
``short`` is the footer's word, ``long`` the help screen's and the palette's
sentence, ``palette`` the palette's namespaced entry ("go: next backtrack").
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding

STEP = Binding.Group("step", compact=True)
JUMP = Binding.Group("backtrack", compact=True)
SECTIONS = ("Timeline", "Jump", "View", "Panes", "App")


@dataclass(frozen=True)
class Action:
    id: str
    action: str  # the screen's action, with its arguments
    section: str
    long: str
    keys: str | None = None  # default keys; None: palette only
    short: str = ""
    palette: str | None = None
    footer: bool = False
    priority: bool = False  # before a focused pane's own keys (timeline keys)
    key_display: str | None = None
    group: Binding.Group | None = None


def _a(id, action, section, long, keys=None, short="", palette=None, **kw) -> Action:
    return Action(id, action, section, long, keys, short, palette, **kw)


ACTIONS: tuple[Action, ...] = (
    _a("quit", "quit", "App", "Quit (stops a running script)", "q", "quit", footer=True),
    _a("help", "help", "App", "Help: every key", "question_mark", "help", "help: keys", footer=True, key_display="?"),
    _a("step-back", "step(-1)", "Timeline", "Step back one token", "left", "step", footer=True, priority=True,
       key_display="←", group=STEP),
    _a("step-forward", "step(1)", "Timeline", "Step forward one token", "right", "step", footer=True, priority=True,
       key_display="→", group=STEP),
    _a("step-back-10", "step(-10)", "Timeline", "Step back 10 tokens", "shift+left", priority=True),
    _a("step-forward-10", "step(10)", "Timeline", "Step forward 10 tokens", "shift+right", priority=True),
    _a("step-back-100", "step(-100)", "Timeline", "Step back 100 tokens", "pageup", priority=True),
    _a("step-forward-100", "step(100)", "Timeline", "Step forward 100 tokens", "pagedown", priority=True),
    _a("home", "home", "Timeline", "Go to the first token", "home", palette="go: first token", priority=True),
    _a("end", "end", "Timeline", "Go to the end (and follow a live run)", "end", palette="go: end and follow",
       priority=True),
    _a("play", "play", "Timeline", "Play / pause at the recorded pace", "space", "play", "play: play / pause",
       footer=True, priority=True, key_display="␣"),
    _a("faster", "speed(1)", "Timeline", "Play faster", "plus,equals_sign", palette="play: faster", key_display="+"),
    _a("slower", "speed(-1)", "Timeline", "Play slower", "minus", palette="play: slower", key_display="-"),
    _a("next-backtrack", "backtrack(1)", "Jump", "Next backtrack", "b", "backtrack", "go: next backtrack",
       footer=True, group=JUMP),
    _a("prev-backtrack", "backtrack(-1)", "Jump", "Previous backtrack", "B", "backtrack", "go: previous backtrack",
       footer=True, group=JUMP),
    _a("next-low-prob", "low_prob(1)", "Jump", "Next low-probability token (p < 0.1)", "l", "low p",
       "go: next low-probability token", footer=True),
    _a("prev-low-prob", "low_prob(-1)", "Jump", "Previous low-probability token", "L",
       palette="go: previous low-probability token"),
    _a("search", "search", "Jump", "Search token text, node names, capture names and values", "slash", "search",
       "go: search", key_display="/"),
    _a("search-next", "search_step(1)", "Jump", "Next search match", "n", palette="go: next search match"),
    _a("search-prev", "search_step(-1)", "Jump", "Previous search match", "N", palette="go: previous search match"),
    _a("lowest-prob", "lowest_prob", "Jump", "The least likely generated token of the run", "m",
       palette="go: least likely token"),
    _a("least-certain", "least_certain", "Jump",
       "The least certain choice: smallest lead over the next allowed token, after the mask", "M",
       palette="go: least certain choice"),
    _a("cycle-color", "cycle_color", "View", "Colour by probability / latency / kind", "c", "colour", footer=True),
    _a("color-probability", "set_color('probability')", "View", "Token background by sampled probability",
       palette="view: colour by probability"),
    _a("color-latency", "set_color('latency')", "View", "Token background by latency relative to the median",
       palette="view: colour by latency"),
    _a("color-kind", "set_color('kind')", "View", "Token background by prompt / generated / forced",
       palette="view: colour by kind"),
    _a("cycle-underline", "cycle_underline", "View", "Underline slow / unlikely / forced tokens, or none", "u"),
    _a("underline-latency", "set_underline('latency')", "View", "Underline tokens slower than 2× the median",
       palette="view: underline slow tokens"),
    _a("underline-probability", "set_underline('probability')", "View", "Underline tokens with p < 0.25",
       palette="view: underline unlikely tokens"),
    _a("underline-kind", "set_underline('kind')", "View", "Underline tokens the grammar forced",
       palette="view: underline forced tokens"),
    _a("underline-none", "set_underline('none')", "View", "No second metric", palette="view: no underline"),
    _a("toggle-backtracked", "toggle_backtracked", "View", "Backtracked tokens: struck through / hidden", "x",
       "struck", "view: struck-through / hidden backtracked tokens"),
    _a("toggle-whitespace", "toggle_whitespace", "View", "Visible whitespace", "w",
       palette="view: visible whitespace"),
    _a("toggle-detail", "toggle_detail", "View", "Show / hide the token detail pane", "d",
       palette="view: token detail pane"),
    _a("clear-highlight", "clear_highlight", "View", "Clear the node highlight and token pick", "escape"),
    _a("focus-tokens", "focus_pane('tokens')", "Panes", "Focus the token stream", "f", palette="pane: token stream"),
    _a("focus-tree", "focus_pane('tree')", "Panes", "Focus the program tree", "t", palette="pane: program tree"),
    _a("focus-backtracks", "focus_pane('backtracks')", "Panes", "Focus the backtrack list", "k",
       palette="pane: backtracks"),
    _a("focus-output", "focus_pane('output')", "Panes", "Show the script's output", "o",
       palette="pane: script output"),
    _a("fork", "fork", "Jump",
       "Fork here…: regenerate the token's grammar node from another allowed token (the Python after it is "
       "not re-run)", "F", palette="fork: fork here… (regenerate this node with another token)", key_display="F"),
    _a("compare-branch", "compare_branch", "Panes",
       "Compare branches: mark the tree's node, then on another one compare the two", "v",
       palette="compare: mark / compare the tree's branch"),
)

BY_ID = {a.id: a for a in ACTIONS}

_KEY_NAMES = {"shift+left": "shift+←", "shift+right": "shift+→", "pageup": "PgUp", "pagedown": "PgDn",
              "home": "Home", "end": "End", "escape": "Esc", "␣": "space", "B": "shift+b", "L": "shift+l",
              "N": "shift+n", "M": "shift+m", "F": "shift+f"}


def bindings() -> list[Binding]:
    """The screen's bindings, quit and help first: the footer drops what does not fit from its end."""
    return [Binding(a.keys, a.action, a.short or a.long, show=a.footer, key_display=a.key_display,
                    priority=a.priority, tooltip=a.long, id=a.id, group=a.group)
            for a in ACTIONS if a.keys is not None]


def help_rows(keymap: dict[str, str] | None = None) -> list[tuple[str, str, str]]:
    """(section, keys, description) for the help screen, by section; ``keymap``: the user's rebindings."""
    keymap = keymap or {}
    rows = []
    for section in SECTIONS:
        for a in ACTIONS:
            if a.section != section or a.keys is None:
                continue
            keys = keymap.get(a.id) or a.key_display or a.keys
            rows.append((section, _KEY_NAMES.get(keys, keys), a.long))
    return rows


def palette_entries() -> list[tuple[str, str, str]]:
    """(palette text, action, help) for the command palette."""
    return [(a.palette, a.action, a.long) for a in ACTIONS if a.palette is not None]
