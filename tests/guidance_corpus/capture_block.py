"""capture() around a grammar and around a stateful function; a named block."""
# expect: greeting=Hello, [A-Za-z]+
# expect: intro=(?s)Name: .*
# expect: section=(?s)<b>.*</b>
import sys

import guidance
from guidance import block, capture, gen, models, regex


@guidance
def intro(lm):
    return lm + "Name: " + gen(max_tokens=3, stop="\n")


lm = models.LlamaCpp(sys.argv[1], echo=False)
lm += capture("Hello, " + regex("[A-Z][a-z]{1,8}"), "greeting")
lm += "\n" + capture(intro(), "intro")
with block("section", opener="<b>", closer="</b>"):
    lm += "Bold: " + gen(max_tokens=3, stop="<")
lm += "\n"
