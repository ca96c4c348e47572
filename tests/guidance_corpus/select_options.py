"""select between strings and numbers, as in guidance's select docs."""
# expect: verdict=(yes|no)
# expect: number=(1|2|3)
import sys

from guidance import gen, models, select

lm = models.LlamaCpp(sys.argv[1], echo=False)
lm += "Is Paris in France? Answer: " + select(["yes", "no"], name="verdict")
lm += "\nPick a number: " + select([1, 2, 3], name="number")
print(lm["verdict"], lm["number"])
