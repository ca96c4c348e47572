"""Persisted settings and the user keymap (guidance_tui.config)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import platformdirs
import pytest

from guidance_tui import config
from guidance_tui.config import ConfigError, Settings, load_keymap, load_settings, save_settings, valid_key

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def cfg(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "config" / "guidance-tui"
    monkeypatch.setenv(config.CONFIG_DIR_ENV, str(d))
    return d


def one_line(text: str) -> bool:
    return "\n" not in text and "\r" not in text and text.strip() == text and bool(text)


# -- where ----------------------------------------------------------------------
def test_the_directory_comes_from_the_environment_variable_or_platformdirs(cfg, monkeypatch):
    assert config.config_dir() == cfg
    assert config.settings_path() == cfg / "settings.toml"
    assert config.keymap_path() == cfg / "keymap.toml"
    monkeypatch.delenv(config.CONFIG_DIR_ENV)
    assert config.config_dir() == Path(platformdirs.user_config_dir("guidance-tui"))
    monkeypatch.setenv(config.CONFIG_DIR_ENV, "")  # empty: not set
    assert config.config_dir() == Path(platformdirs.user_config_dir("guidance-tui"))


def test_importing_config_loads_no_textual(tmp_path):
    code = ("import sys, json; import guidance_tui.config as c; c.load_settings(); c.load_keymap(); "
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, config.CONFIG_DIR_ENV: str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    mods = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert "textual" not in mods and "rich" not in mods


# -- settings -------------------------------------------------------------------
def test_settings_round_trip_and_the_directory_is_created(cfg):
    assert not cfg.exists()
    path = save_settings(Settings(theme="textual-light"))
    assert path == cfg / "settings.toml"
    assert load_settings() == (Settings(theme="textual-light"), None)
    assert tomllib.loads(path.read_text(encoding="utf-8")) == {"theme": "textual-light"}
    assert sorted(p.name for p in cfg.iterdir()) == ["settings.toml"]  # no temporary file left behind
    save_settings(Settings(theme="nord"))  # replaces
    assert load_settings() == (Settings(theme="nord"), None)


@pytest.mark.parametrize("theme", ['quote " and \\ backslash', "tab\tnew\nline", "ünïcødé 🎨", "ctl \x01\x7f",
                                   "'"])
def test_any_theme_name_survives_the_round_trip(cfg, theme):
    save_settings(Settings(theme=theme))
    assert load_settings() == (Settings(theme=theme), None)


def test_an_unset_theme_is_not_written(cfg):
    path = save_settings(Settings())
    assert tomllib.loads(path.read_text(encoding="utf-8")) == {}
    assert load_settings() == (Settings(theme=None), None)


def test_no_directory_or_no_file_gives_the_defaults_quietly(cfg):
    assert load_settings() == (Settings(), None)
    cfg.mkdir(parents=True)
    assert load_settings() == (Settings(), None)


@pytest.mark.parametrize("content, expect", [
    (b'theme = "nord\n', "line 1"),                     # unterminated string
    (b'# ok\ntheme = nord\n', "line 2"),                # bare value
    (b'theme = "a"\ntheme = "b"\n', "line 2"),          # duplicate key
    (b'\xff\xfe theme = "x"', "not UTF-8"),
    (b'theme = 3\n', "theme should be a string, not an integer"),
    (b'theme = ["nord"]\n', "theme should be a string, not an array"),
])
def test_a_damaged_settings_file_gives_the_defaults_and_a_one_line_warning(cfg, content, expect):
    cfg.mkdir(parents=True)
    (cfg / "settings.toml").write_bytes(content)
    settings, warning = load_settings()
    assert settings == Settings()
    assert warning is not None and one_line(warning)
    assert str(cfg / "settings.toml") in warning
    assert expect in warning


def test_an_unreadable_settings_file_gives_the_defaults_and_a_warning(cfg):
    (cfg / "settings.toml").mkdir(parents=True)  # a directory where the file should be
    settings, warning = load_settings()
    assert settings == Settings() and warning is not None and one_line(warning)
    assert "settings.toml" in warning


def test_unknown_settings_are_ignored(cfg):
    cfg.mkdir(parents=True)
    (cfg / "settings.toml").write_text('theme = "dracula"\nfuture = 1\n[later]\nx = 2\n', encoding="utf-8")
    assert load_settings() == (Settings(theme="dracula"), None)


def test_a_failed_save_raises_config_error_and_keeps_the_old_file(cfg, monkeypatch):
    save_settings(Settings(theme="old"))

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(config.os, "replace", boom)
        with pytest.raises(ConfigError) as e:
            save_settings(Settings(theme="new"))
    assert one_line(str(e.value)) and "settings.toml" in str(e.value) and "No space left" in str(e.value)
    assert load_settings() == (Settings(theme="old"), None)
    assert sorted(p.name for p in cfg.iterdir()) == ["settings.toml"]


def test_saving_where_no_directory_can_be_made_raises_config_error(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(config.CONFIG_DIR_ENV, str(blocker / "sub"))
    with pytest.raises(ConfigError) as e:
        save_settings(Settings(theme="nord"))
    assert one_line(str(e.value))
    assert load_settings() == (Settings(), None)  # and reading there is no problem


# -- keymap ---------------------------------------------------------------------
def write_keymap(cfg: Path, text: str) -> Path:
    cfg.mkdir(parents=True, exist_ok=True)
    path = cfg / "keymap.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_no_keymap_file_is_an_empty_keymap(cfg):
    assert load_keymap() == {}
    assert load_keymap(known_ids=["quit"]) == {}


def test_a_keymap_is_read_and_normalised(cfg):
    write_keymap(cfg, '# mine\n[keys]\nquit = "ctrl+q"\nnext-backtrack = "n , ctrl+n"\nhelp = "?"\n'
                      'faster = "plus,equals_sign"\n')
    ids = ["quit", "next-backtrack", "help", "faster", "slower"]
    assert load_keymap(known_ids=ids) == {"quit": "ctrl+q", "next-backtrack": "n,ctrl+n", "help": "?",
                                          "faster": "plus,equals_sign"}
    assert load_keymap() == load_keymap(known_ids=ids)


def test_an_empty_keys_table_or_file_is_an_empty_keymap(cfg):
    write_keymap(cfg, "")
    assert load_keymap() == {}
    write_keymap(cfg, "[keys]\n")
    assert load_keymap() == {}


def test_an_unknown_binding_id_names_the_file_and_the_known_ids(cfg):
    path = write_keymap(cfg, '[keys]\nquit = "ctrl+q"\nxyz = "x"\n')
    with pytest.raises(ConfigError) as e:
        load_keymap(known_ids=["quit", "help"])
    msg = str(e.value)
    assert one_line(msg)
    assert msg == f"{path}: unknown binding id 'xyz' (known: help, quit)"
    assert load_keymap() == {"quit": "ctrl+q", "xyz": "x"}  # without known ids nothing is unknown


def test_a_toml_syntax_error_names_the_file_and_the_line(cfg):
    path = write_keymap(cfg, '[keys]\nquit = "ctrl+q"\nhelp = ?\n')
    with pytest.raises(ConfigError) as e:
        load_keymap()
    msg = str(e.value)
    assert one_line(msg)
    assert msg.startswith(f"{path}, line 3")
    assert "invalid TOML" in msg


@pytest.mark.parametrize("text, expect", [
    ('quit = "ctrl+q"\n', "put the bindings under a [keys] table"),
    ('keys = "ctrl+q"\n', "'keys' should be a table"),
    ('[keys]\nquit = 3\n', "binding 'quit' should be a string of keys, not an integer"),
    ('[keys]\nquit.now = "q"\n', "binding 'quit' should be a string of keys, not a table"),
    ('[keys]\nquit = ""\n', "binding 'quit': an empty key"),
    ('[keys]\nquit = "  "\n', "binding 'quit': an empty key"),
    ('[keys]\nquit = "q,,x"\n', "empty alternative"),
    ('[keys]\nquit = "contrl+q"\n', "unknown modifier 'contrl'"),
    ('[keys]\nquit = "ctrl+qq"\n', "unknown key name 'qq'"),
    ('[keys]\nquit = "Enter"\n', "unknown key name 'Enter'"),
    ('[keys]\nquit = "ctrl+?"\n', "write '?' by its name ('question_mark')"),
    ('[keys]\nquit = "ctrl+Q"\n', "'shift+q'"),
    ('[keys]\nquit = "ctrl++"\n', "'plus'"),
    ('[keys]\nquit = "ctrl+ctrl+q"\n', "repeats a modifier"),
    ('[keys]\nquit = "ctrl q"\n', "contains a space"),
])
def test_an_invalid_keymap_raises_a_one_line_config_error_with_the_path(cfg, text, expect):
    path = write_keymap(cfg, text)
    with pytest.raises(ConfigError) as e:
        load_keymap()
    msg = str(e.value)
    assert one_line(msg) and msg.startswith(str(path)), msg
    assert expect in msg


def test_an_unreadable_keymap_raises_config_error(cfg):
    (cfg / "keymap.toml").mkdir(parents=True)
    with pytest.raises(ConfigError) as e:
        load_keymap()
    assert one_line(str(e.value)) and "keymap.toml" in str(e.value)


def test_every_key_textual_names_is_accepted():
    from textual.keys import KEY_NAME_REPLACEMENTS, Keys, _character_to_key
    from textual._keyboard_protocol import FUNCTIONAL_KEYS

    names = {k.value for k in Keys if not k.value.startswith("<") and k.value != "ctrl-at"}
    names |= set(FUNCTIONAL_KEYS.values()) | set(KEY_NAME_REPLACEMENTS.values())
    names |= {_character_to_key(chr(c)) for c in range(0x21, 0x7F)}
    names |= {chr(c) for c in range(0x21, 0x7F) if chr(c) != ","}  # "," separates alternatives: "comma"
    names |= {"ctrl+shift+left", "alt+shift+a", "super+f5", "é"}
    rejected = {n: valid_key(n) for n in sorted(names) if valid_key(n) is not None}
    assert not rejected


def test_a_loaded_keymap_rebinds_the_app(cfg):
    from textual.app import App
    from textual.binding import Binding

    class Demo(App):
        BINDINGS = [Binding("q", "mark('quit')", id="quit"), Binding("question_mark", "mark('help')", id="help")]
        marks: list[str] = []

        def action_mark(self, what: str) -> None:
            self.marks.append(what)

    write_keymap(cfg, '[keys]\nquit = "ctrl+x, n"\nhelp = "?"\n')
    keymap = load_keymap(known_ids=[b.id for b in Demo.BINDINGS])

    async def run() -> list[str]:
        app = Demo()
        async with app.run_test() as pilot:
            app.set_keymap(keymap)
            await pilot.press("q", "ctrl+x", "n", "question_mark")
            await pilot.pause()
        return app.marks

    assert asyncio.run(run()) == ["quit", "quit", "help"]
