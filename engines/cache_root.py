"""Where guidance-tui keeps what it can rebuild: ``$GUIDANCE_TUI_CACHE`` or the user cache directory."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    env = os.environ.get("GUIDANCE_TUI_CACHE")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("guidance-tui"))
