"""Building a list in a Python loop with list_append (guidance's gen docs)."""
# expect: items=.+
import sys

from guidance import gen, models

lm = models.LlamaCpp(sys.argv[1], echo=False)
lm += "Three fruits:\n"
for i in range(3):
    lm += f"{i + 1}. " + gen("items", regex="[A-Za-z]+", list_append=True) + "\n"
assert isinstance(lm["items"], list) and len(lm["items"]) == 3, lm["items"]
print(lm["items"])
