"""The inspector's panes: Textual widgets that draw the headless state."""
