"""A named gen with tools, joined to its prompt with + (the arithmetic example)."""
# expect: result=(?s).*add\(11, ?9\) = 20.*
import sys

import guidance
from guidance import gen, models


def add(a: int, b: int):
    return a + b


lm = models.LlamaCpp(sys.argv[1], echo=False)
lm += "1 + 1 = add(1, 1) = 2\n3 + 5 = add(3, 5) = 8\n"
lm += "11 + 9" + gen("result", tools=[add], max_tokens=12, stop="\n")
print(lm["result"])
