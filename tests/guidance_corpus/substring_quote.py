"""substring: quote a part of a passage (guidance's substring docs)."""
# expect: quote=.*
import sys

from guidance import models, substring

PASSAGE = "The quick brown fox jumps over the lazy dog"
lm = models.LlamaCpp(sys.argv[1], echo=False)
lm += f"Passage: {PASSAGE}\nWhat does the fox do? Quote: " + substring(PASSAGE, name="quote")
assert lm["quote"] in PASSAGE
