"""The user's keymap, the saved theme and the Screenshot command, in the app."""

from __future__ import annotations

from pathlib import Path

import pytest
from _app_support import small_store, sync

from guidance_tui import config, exit_codes
from guidance_tui.app.actions import ACTIONS, BY_ID, bindings, help_rows, palette_entries
from guidance_tui.cli import main
from guidance_tui.cli.app_commands import make_app

SIZE = (100, 32)


@pytest.fixture()
def config_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "config"
    monkeypatch.setenv(config.CONFIG_DIR_ENV, str(d))
    return d


def write_keymap(config_dir: Path, text: str) -> None:
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / config.KEYMAP_FILE).write_text(text)


# -- one registry -------------------------------------------------------------------
def test_bindings_help_and_palette_come_from_one_registry():
    ids = [a.id for a in ACTIONS]
    assert len(set(ids)) == len(ids)
    assert {b.id for b in bindings()} == {a.id for a in ACTIONS if a.keys}
    assert len(help_rows()) == len(bindings())
    assert {action for _, action, _ in palette_entries()} <= {a.action for a in ACTIONS}
    for text, action, _ in palette_entries():
        assert ":" in text, text  # namespaced: "go: …", "view: …"


def test_quit_and_help_come_first_in_the_footer():
    shown = [b.id for b in bindings() if b.show]
    assert shown[:2] == ["quit", "help"]  # the footer crops from its end


def test_help_shows_the_users_keys():
    rows = {desc: keys for _, keys, desc in help_rows({"next-backtrack": "n"})}
    assert rows[BY_ID["next-backtrack"].long] == "n"


# -- the keymap ---------------------------------------------------------------------
@sync
async def test_a_user_keymap_rebinds_keys(config_dir):
    write_keymap(config_dir, '[keys]\nnext-backtrack = "n"\n')
    app = make_app(small_store())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("home", "n")
        await pilot.pause()
        assert app.inspector.cursor.seq == app.inspector.index.backtracks[0].seq
        await pilot.press("home", "b")  # the old key no longer does it
        await pilot.pause()
        assert app.inspector.cursor.seq != app.inspector.index.backtracks[0].seq


def test_a_keymap_naming_an_unknown_action_is_a_one_line_error_before_the_script_starts(
        config_dir, tmp_path, monkeypatch, capsys):
    write_keymap(config_dir, '[keys]\nfly-away = "f"\n')
    script = tmp_path / "s.py"
    script.write_text("print('never')\n")
    monkeypatch.setattr("guidance_tui.cli.app_commands._stdout_is_terminal", lambda: True)
    code = main(["run", str(script), "--record", str(tmp_path / "t.gtt")])
    err = capsys.readouterr().err
    assert code == exit_codes.USAGE
    assert err.count("\n") == 1 and "keymap.toml" in err and "'fly-away'" in err
    assert not (tmp_path / "t.gtt").exists()  # nothing was started


def test_a_keymap_with_a_syntax_error_names_the_line(config_dir):
    write_keymap(config_dir, '[keys]\nquit = \n')
    with pytest.raises(Exception) as e:
        make_app(small_store())
    assert e.value.code == exit_codes.USAGE and "line 2" in str(e.value)


# -- the theme ----------------------------------------------------------------------
@sync
async def test_the_chosen_theme_is_saved_and_used_next_time(config_dir):
    app = make_app(small_store())
    async with app.run_test(size=SIZE) as pilot:
        app.theme = "textual-light"
        await pilot.pause()
    assert config.load_settings()[0].theme == "textual-light"
    again = make_app(small_store())
    async with again.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert again.theme == "textual-light"
        assert again.inspector.detail_pane.text_styles.error != "red"  # the panes took the theme's styles


@sync
async def test_a_damaged_settings_file_is_a_warning_not_a_failure(config_dir):
    config_dir.mkdir(parents=True)
    (config_dir / config.SETTINGS_FILE).write_text("theme = [\n")
    app = make_app(small_store())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert any("settings" in str(n.message) for n in app._notifications)


# -- screenshots --------------------------------------------------------------------
@sync
async def test_screenshot_saves_next_to_the_runs_and_says_where(tmp_path):
    app = make_app(small_store(), screenshot_dir=tmp_path / "shots")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+p")  # as a user does it: the palette's Screenshot
        await pilot.press(*"Screenshot")
        await pilot.pause(0.3)
        await pilot.press("enter")
        for _ in range(50):
            await pilot.pause(0.05)
            saved = list((tmp_path / "shots").glob("*.svg"))
            if saved:
                break
        assert len(saved) == 1 and "<svg" in saved[0].read_text()[:200]
        assert any(str(saved[0]) in str(n.message) for n in app._notifications)


@sync
async def test_screenshot_falls_back_to_the_current_directory(tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("")  # a file where the folder should be
    monkeypatch.chdir(tmp_path)
    app = make_app(small_store(), screenshot_dir=blocked / "shots")
    async with app.run_test(size=SIZE) as pilot:
        app.action_screenshot()
        await pilot.pause()
        assert len(list(tmp_path.glob("*.svg"))) == 1
