"""The panes' text styles under the current theme, typed.

Every pane takes one ``Styles`` (frozen, hashable: a pane may key caches on
it).  ``Styles()`` is a readable default before a theme is applied;
``Styles.from_theme`` derives every field from the theme's colours, so a theme
change restyles all panes at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from guidance_tui.widgets.colors import ThemeColors


@dataclass(frozen=True)
class Styles:
    muted: str = "dim"
    faint: str = "dim"
    accent: str = "bold"
    success: str = "green"
    warning: str = "yellow"
    error: str = "red"
    primary: str = "bold"
    chip: str = "reverse"
    kind_prompt: str = "bold"
    kind_generated: str = "bold"
    kind_forced: str = "bold italic"
    status_accent: str = "bold reverse"
    status_success: str = "bold reverse"
    status_error: str = "bold reverse"
    status_warning: str = "bold reverse"
    status_muted: str = "bold"
    mode_live: str = "bold"
    mode_replay: str = "bold"
    mode_loading: str = "bold"
    spark_cpu: str = ""
    spark_ram: str = ""
    spark_gpu: str = ""
    spark_vram: str = ""
    track_played: str = "bold"
    track_rest: str = "dim"
    track_mark: str = "yellow"
    bar: str = ""
    guide: str = "dim"
    role: str = "bold"
    kind: str = ""
    tool: str = "bold"

    def for_kind(self, kind_name: str) -> str:
        """A token kind's label: prompt, generated or forced."""
        return getattr(self, "kind_" + kind_name, "bold")

    def status(self, tone: str) -> str:
        """A status chip: accent, success, error, warning or muted."""
        return getattr(self, "status_" + tone, self.status_muted)

    def mode(self, mode: str) -> str:
        """The app's mode word: live, replay or loading."""
        return getattr(self, "mode_" + mode, self.muted)

    @classmethod
    def from_theme(cls, tc: ThemeColors) -> "Styles":
        def on(color) -> str:  # bold text that reads on ``color``
            return f"bold {color.get_contrast_text(1.0).hex} on {color.hex}"

        return cls(
            muted=tc.muted.hex, faint=tc.foreground.blend(tc.background, 0.65).hex, accent=tc.accent.hex,
            success=tc.success.hex, warning=tc.warning.hex, error=tc.error.hex, primary=tc.primary.hex,
            chip=f"bold {tc.background.hex} on {tc.foreground.blend(tc.background, 0.15).hex}",
            kind_prompt=f"bold {tc.muted.hex}", kind_generated=f"bold {tc.primary.hex}",
            kind_forced=f"bold italic {tc.accent.hex}",
            status_accent=on(tc.accent), status_success=on(tc.success), status_error=on(tc.error),
            status_warning=on(tc.warning), status_muted=f"bold on {tc.panel.hex}",
            mode_live=f"bold {tc.accent.hex}", mode_replay=f"bold {tc.primary.hex}",
            mode_loading=f"bold {tc.warning.hex}",
            spark_cpu=tc.primary.hex, spark_ram=tc.success.hex, spark_gpu=tc.accent.hex, spark_vram=tc.warning.hex,
            track_played=tc.primary.hex, track_rest=tc.foreground.blend(tc.background, 0.75).hex,
            track_mark=tc.warning.hex, bar=tc.primary.hex, guide=tc.foreground.blend(tc.background, 0.7).hex,
            role=f"bold {tc.primary.hex}", kind=tc.accent.hex, tool=f"bold {tc.warning.hex}",
        )
