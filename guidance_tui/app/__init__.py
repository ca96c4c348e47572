"""The Textual app: the inspector's screens, its actions and their keys."""

from guidance_tui.app.inspector_app import InspectorApp

__all__ = ["InspectorApp"]
