"""Pull structured data out of a paragraph with a JSON schema.

    guidance-tui run examples/json_extraction.py

Look for: forced tokens (the keys and punctuation the schema fixes), the
allowed-set size dropping inside strings and numbers, and the probability of
each value token.
"""

from engines import json, models

PARAGRAPH = (
    "Ada Lovelace was born in London in 1815. She worked with Charles Babbage on the "
    "Analytical Engine and is often called the first computer programmer."
)

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "born": {"type": "integer"},
        "city": {"type": "string"},
    },
    "required": ["name", "born", "city"],
    "additionalProperties": False,
}

lm = models.default()
lm += f"Text: {PARAGRAPH}\nThe person in the text, as JSON: "
lm += json("person", schema=SCHEMA)
print(lm["person"])
