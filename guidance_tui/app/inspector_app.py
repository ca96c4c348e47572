"""The inspector app: holds the theme, the keymap and the exit code; the
screens do the inspecting (``InspectorScreen``: one run, live or replayed;
``RunsScreen``: the run browser)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from textual.app import App, SystemCommand
from textual.screen import Screen

from tracing.store import TraceStore

from guidance_tui import exit_codes
from guidance_tui.app.inspector_screen import InspectorScreen
from guidance_tui.state.pacer import TICK_HZ
from guidance_tui.widgets.colors import ThemeColors
from guidance_tui.widgets.styles import Styles


class InspectorApp(App[int]):
    """Inspect a run (see ``InspectorScreen`` for the arguments), or with
    ``store=None`` browse the runs in ``browse`` (a runs directory; ``live_only``:
    just the live ones, to choose one to attach to).

    ``keymap``: binding id → keys, the user's rebindings (``guidance_tui.config.load_keymap``).
    ``theme``: the theme to start with (the user's saved choice); ``on_theme``
    is called with the name whenever the user picks another.
    """

    CSS_PATH = "app.tcss"
    TITLE = "guidance-tui"
    ENABLE_COMMAND_PALETTE = True

    def __init__(self, store: TraceStore | None = None, *, script_run=None, follower=None, live: bool = False,
                 loader=None, title: str = "", tick_hz: float = TICK_HZ, use_monitor: bool = True,
                 keymap: dict[str, str] | None = None, theme: str | None = None, on_theme=None,
                 screenshot_dir: Path | None = None, browse: Path | None = None, live_only: bool = False) -> None:
        super().__init__()
        self.inspector = None if store is None else InspectorScreen(
            store, script_run=script_run, follower=follower, live=live, loader=loader, title=title,
            tick_hz=tick_hz, use_monitor=use_monitor)
        self.browse = browse
        self.live_only = live_only
        self.keymap = dict(keymap or {})
        self.startup_warning = ""
        self.text_styles = Styles()
        self.screenshot_dir = screenshot_dir
        self._start_theme = theme
        self._on_theme = on_theme

    # -- lifecycle ---------------------------------------------------------
    def get_default_screen(self) -> Screen:
        if self.inspector is None:
            from guidance_tui.app.runs_screen import RunsScreen

            return RunsScreen(self.browse, live_only=self.live_only)
        return self.inspector

    def open_run(self, path: str | Path) -> None:
        """Open a recorded run over the current screen (``q`` there comes back)."""
        from guidance_tui.state.sources import open_recording

        rec = open_recording(path)
        self.push_screen(InspectorScreen(rec.store, **rec.screen_options()))
        if rec.warning:
            self.notify(rec.warning, severity="warning", timeout=8)

    def on_mount(self) -> None:
        if self.keymap:
            self.set_keymap(self.keymap)
        if self._start_theme and self._start_theme in self.available_themes:
            self.theme = self._start_theme
        self.theme_changed_signal.subscribe(self, self._theme_changed)
        if self.startup_warning:
            self.notify(self.startup_warning, severity="warning", timeout=8)

    def theme_colors(self) -> ThemeColors:
        v = self.get_css_variables()
        dark = self.current_theme.dark if self.current_theme is not None else True
        colors = ThemeColors.from_variables(v, dark, background=v.get("background"))
        self.text_styles = Styles.from_theme(colors)
        return colors

    def _theme_changed(self, theme) -> None:
        colors = self.theme_colors()
        for screen in self.screen_stack:
            if isinstance(screen, InspectorScreen):
                screen.apply_theme(colors)
        if self._on_theme is not None:
            try:
                self._on_theme(theme.name)
            except Exception as e:  # an unwritable config directory: the theme still applies
                self.notify(str(e), title="Theme not saved", severity="warning", timeout=8)

    # -- what the screens share ----------------------------------------------
    @property
    def script_done(self):
        return self.inspector.script_done

    @property
    def result(self):
        return self.inspector.result if self.inspector is not None else None

    @property
    def run_error(self) -> BaseException | None:
        return self.inspector.run_error if self.inspector is not None else None

    async def action_quit(self) -> None:
        if self.inspector is not None:
            self.inspector.stop_script()
        self.exit(self._exit_code())

    def _exit_code(self) -> int:
        result = self.result
        return exit_codes.OK if result is None else int(getattr(result, "exit_code", exit_codes.OK))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        for command in super().get_system_commands(screen):
            if command.title != "Screenshot":  # Textual's saves to ~/Downloads, which may not exist
                yield command
        yield SystemCommand("Screenshot", "Save an SVG picture of the screen next to the runs",
                            lambda: self.set_timer(0.1, self.action_screenshot))

    def action_screenshot(self, filename: str | None = None, path: str | None = None) -> None:
        """Save an SVG of the screen next to the runs (else in the current directory) and say where."""
        if self.is_web:  # textual-serve hands the file to the browser
            self.deliver_screenshot(filename, path)
            return
        tried = [Path(path)] if path else [self.screenshot_dir or _screenshots_dir(), Path.cwd()]
        for folder in tried:
            try:
                folder.mkdir(parents=True, exist_ok=True)
                saved = self.save_screenshot(filename, str(folder))
            except OSError as e:
                error = f"{folder}: {e.strerror or e}"
                continue
            self.notify(f"Saved {saved}", title="Screenshot", timeout=8)
            return
        self.notify(f"Could not save a screenshot ({error})", title="Screenshot", severity="error", timeout=8)


def _screenshots_dir() -> Path:
    from guidance_tui.paths import data_dir

    return data_dir() / "screenshots"
