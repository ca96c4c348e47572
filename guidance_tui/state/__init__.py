"""The inspector's state, headless: the token index, the cursor, the wrapped
layout, statistics, pacing and the live feed.  Pure objects, tested without
Textual, which none of these modules imports."""
