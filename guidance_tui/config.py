"""The user's persisted settings and key bindings (headless: never imports Textual).

Both files live in one directory: ``$GUIDANCE_TUI_CONFIG_DIR`` when that is set,
else ``platformdirs.user_config_dir("guidance-tui")`` (``~/.config/guidance-tui``
on Linux).

``settings.toml``, written by the app (one key per :class:`Settings` field; a
field left at ``None`` is not written)::

    # guidance-tui settings; the app rewrites this file when a setting changes.
    theme = "textual-light"

``keymap.toml``, written by the user: binding ids to keys, in Textual's key
syntax (``ctrl+q``, ``shift+left``, ``question_mark``, ``?``); commas separate
alternatives::

    [keys]
    quit = "ctrl+q"
    next-backtrack = "n,ctrl+n"

The settings file must never stop the app: :func:`load_settings` falls back
to the defaults and returns a one-line warning instead of raising.  A broken
keymap is the user's own edit, so :func:`load_keymap` raises
:class:`ConfigError`, whose message is one line naming the file (and the line,
for a syntax error), for the caller to show.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
import tomllib
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import platformdirs

APP = "guidance-tui"
CONFIG_DIR_ENV = "GUIDANCE_TUI_CONFIG_DIR"
SETTINGS_FILE = "settings.toml"
KEYMAP_FILE = "keymap.toml"

__all__ = [
    "CONFIG_DIR_ENV", "ConfigError", "Settings", "config_dir", "keymap_path", "load_keymap", "load_settings",
    "save_settings", "settings_path", "valid_key",
]


class ConfigError(Exception):
    """A settings or keymap file that cannot be used; the message is one line and names the file."""


@dataclass
class Settings:
    """What the app remembers between runs.  ``None`` means "not set": use the app's default."""

    theme: str | None = None


def config_dir() -> Path:
    """The directory holding ``settings.toml`` and ``keymap.toml`` (it may not exist yet)."""
    override = os.environ.get(CONFIG_DIR_ENV)
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_config_dir(APP))


def settings_path() -> Path:
    return config_dir() / SETTINGS_FILE


def keymap_path() -> Path:
    return config_dir() / KEYMAP_FILE


# -- reading ------------------------------------------------------------------
def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _read_toml(path: Path) -> dict | None:
    """The parsed file, or ``None`` when it does not exist; any other problem is a ConfigError."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except NotADirectoryError:  # a parent of the path is a file: there is no such file either
        return None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it: {_one_line(e.strerror or e)}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(f"{path}, line {line}: not UTF-8 text") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(_syntax_message(path, e)) from None


_AT = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$|\s*\(at end of document\)\s*$")


def _syntax_message(path: Path, e: tomllib.TOMLDecodeError) -> str:
    """``PATH, line N, column M: invalid TOML: WHAT`` from tomllib's message (the line is in its text before 3.14)."""
    msg = str(e)
    line = getattr(e, "lineno", None)
    col = getattr(e, "colno", None)
    m = _AT.search(msg)
    if m:
        msg = msg[: m.start()]
        if line is None and m.group(1):
            line, col = int(m.group(1)), int(m.group(2))
    if getattr(e, "msg", None):  # 3.14 keeps the bare message apart
        msg = e.msg
    where = f", line {line}, column {col}" if line is not None else ", at the end"
    return f"{path}{where}: invalid TOML: {_one_line(msg)}"


def load_settings() -> tuple[Settings, str | None]:
    """The saved settings and ``None``; or the defaults and a one-line warning if the file is unusable.

    A missing file or directory is not a problem (defaults, no warning).  Keys
    this version does not know are ignored; a known key with a value of the
    wrong type is dropped, with a warning.
    """
    path = settings_path()
    try:
        data = _read_toml(path)
    except ConfigError as e:
        return Settings(), f"{e} (using the default settings)"
    if data is None:
        return Settings(), None
    values = {}
    problems = []
    for field in dataclasses.fields(Settings):
        if field.name not in data:
            continue
        value = data[field.name]
        if isinstance(value, str):
            values[field.name] = value
        else:
            problems.append(f"{field.name} should be a string, not {_toml_type(value)}")
    warning = f"{path}: {'; '.join(problems)} (ignored)" if problems else None
    return Settings(**values), warning


def _toml_type(value) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", list: "an array",
            dict: "a table"}.get(type(value), "a date or time")


# -- writing ------------------------------------------------------------------
def _toml_string(s: str) -> str:
    """``s`` as a TOML basic string."""
    out = []
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch in "\b\t\n\f\r":
            out.append({"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F or 0xD800 <= ord(ch) <= 0xDFFF:
            out.append(f"\\u{ord(ch) if ord(ch) < 0xD800 else 0xFFFD:04X}")  # a lone surrogate cannot be stored
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def save_settings(settings: Settings) -> Path:
    """Writes ``settings.toml`` atomically (a temporary file, then ``os.replace``) and returns its path.

    Raises :class:`ConfigError` (one line) if the directory or file cannot be written.
    """
    path = settings_path()
    lines = ["# guidance-tui settings; the app rewrites this file when a setting changes."]
    for field in dataclasses.fields(Settings):
        value = getattr(settings, field.name)
        if value is not None:
            lines.append(f"{field.name} = {_toml_string(str(value))}")
    text = "\n".join(lines) + "\n"
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{SETTINGS_FILE}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise ConfigError(f"{path}: cannot save the settings: {_one_line(e.strerror or e)}") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return path


# -- the keymap -----------------------------------------------------------------
MODIFIERS = frozenset({"ctrl", "shift", "alt", "meta", "super", "hyper"})

# Textual's key names other than characters: textual.keys.Keys without modifiers, and
# the kitty keyboard protocol's functional keys (tests/test_config.py checks this list
# against Textual's).  Any other key is one printable character ("?", "n") or a
# character's Unicode name as Textual spells it: lower case, "_" for spaces and
# hyphens ("question_mark", "full_stop", "less_than_sign").
NAMED_KEYS = frozenset(
    {"escape", "enter", "return", "newline", "tab", "space", "backspace", "delete", "insert", "home", "end",
     "pageup", "pagedown", "up", "down", "left", "right", "at", "minus", "plus", "slash", "backslash",
     "underscore", "circumflex_accent", "right_square_bracket", "left_square_brace", "caps_lock",
     "scroll_lock", "num_lock", "print_screen", "pause", "menu", "kp_begin", "add", "subtract", "multiply",
     "divide", "decimal", "equal", "separator", "media_play", "media_pause", "media_play_pause",
     "media_reverse", "media_stop", "media_fast_forward", "media_rewind", "media_track_next",
     "media_track_previous", "media_record", "lower_volume", "raise_volume", "mute_volume",
     "left_shift", "left_control", "left_alt", "left_super", "left_hyper", "left_meta", "right_shift",
     "right_control", "right_alt", "right_super", "right_hyper", "right_meta", "iso_level3_shift",
     "iso_level5_shift"}
    | {f"f{n}" for n in range(1, 36)}
)


def _unicode_key_name(name: str) -> bool:
    """Whether ``name`` is the name Textual gives some character's key (``question_mark``, ``full_stop``)."""
    parts = name.split("_")
    if len(parts) > 6:
        return False
    # Textual wrote both spaces and hyphens as "_": try each "_" both ways ("less_than_sign": "LESS-THAN SIGN").
    for mask in range(1 << (len(parts) - 1)):
        joined = parts[0]
        for i, part in enumerate(parts[1:]):
            joined += ("-" if mask >> i & 1 else " ") + part
        try:
            ch = unicodedata.lookup(joined)
        except KeyError:
            continue
        if len(ch) == 1 and not ch.isalnum() and _char_name(ch) == name:
            return True
    return False


def _single_key_problem(key: str) -> str | None:
    """Why ``key`` (one alternative, such as ``ctrl+shift+left``) is not a Textual key; ``None`` if it is."""
    if not key:
        return "an empty key"
    if len(key) == 1:  # Textual names it itself ("?" -> "question_mark")
        return None if key.isprintable() and not key.isspace() else f"{key!r} is not a printable character"
    if any(ch.isspace() for ch in key):
        return f"{key!r} contains a space"
    *mods, name = key.split("+")
    for mod in mods:
        if mod not in MODIFIERS:
            if not mod:
                return f"{key!r} has an empty part (write the key '+' as 'plus')"
            return f"{key!r}: unknown modifier {mod!r} (modifiers: {', '.join(sorted(MODIFIERS))})"
    if len(set(mods)) != len(mods):
        return f"{key!r} repeats a modifier"
    if not name:
        return f"{key!r} has no key after its modifiers (write the key '+' as 'plus')"
    if len(name) == 1:
        if not name.isalnum() and key != "ctrl+@":  # with a modifier Textual names the key ("ctrl+@" is legacy)
            return f"{key!r}: with a modifier, write {name!r} by its name ({_char_name(name)!r})"
        if name.isupper():
            return f"{key!r}: with a modifier, write an upper-case letter as 'shift+{name.lower()}'"
        return None
    if name in NAMED_KEYS or _unicode_key_name(name):
        return None
    return f"{key!r}: unknown key name {name!r}"


def _char_name(ch: str) -> str:
    """The name Textual gives a character's key (textual.keys._character_to_key)."""
    try:
        name = unicodedata.name(ch).lower().replace("-", "_").replace(" ", "_")
    except ValueError:
        return ch
    return {"solidus": "slash", "reverse_solidus": "backslash", "commercial_at": "at", "hyphen_minus": "minus",
            "plus_sign": "plus", "low_line": "underscore"}.get(name, name)


def valid_key(keys: str) -> str | None:
    """Why ``keys`` (Textual key syntax, commas between alternatives) is not usable; ``None`` if it is."""
    if not isinstance(keys, str) or not keys.strip():
        return "an empty key"
    for alt in keys.split(","):
        problem = _single_key_problem(alt.strip())
        if problem is not None:
            return problem if alt.strip() else f"{keys!r} has an empty alternative (write the key ',' as 'comma')"
    return None


def load_keymap(known_ids: Iterable[str] | None = None) -> dict[str, str]:
    """Binding id → keys from ``keymap.toml``'s ``[keys]`` table; ``{}`` when there is no file.

    The keys are returned with the spaces around commas removed, ready for
    ``App.set_keymap``.  With ``known_ids``, an id not among them is an error.
    Raises :class:`ConfigError` (one line, with the file's path) for a file
    that cannot be read, invalid TOML, anything but a ``[keys]`` table of
    strings, a key that is not in Textual's syntax, or an unknown id.
    """
    path = keymap_path()
    data = _read_toml(path)
    if data is None:
        return {}
    extra = [k for k in data if k != "keys"]
    if extra:
        raise ConfigError(f"{path}: unexpected top-level entr{'y' if len(extra) == 1 else 'ies'} "
                          f"{', '.join(repr(k) for k in extra)}: put the bindings under a [keys] table")
    table = data.get("keys", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: 'keys' should be a table ([keys]), not {_toml_type(table)}")
    keymap: dict[str, str] = {}
    for binding_id, keys in table.items():
        if not isinstance(keys, str):
            raise ConfigError(f"{path}: binding {binding_id!r} should be a string of keys, not {_toml_type(keys)}")
        problem = valid_key(keys)
        if problem is not None:
            raise ConfigError(f"{path}: binding {binding_id!r}: {problem}")
        keymap[binding_id] = ",".join(k.strip() for k in keys.split(","))
    if known_ids is not None:
        known = set(known_ids)
        unknown = [i for i in keymap if i not in known]
        if unknown:
            raise ConfigError(f"{path}: unknown binding id{'s' if len(unknown) > 1 else ''} "
                              f"{', '.join(repr(i) for i in unknown)} (known: {', '.join(sorted(known)) or 'none'})")
    return keymap
