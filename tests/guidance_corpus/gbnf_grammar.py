"""A llama.cpp GBNF grammar, converted with gbnf_to_lark."""
# expect: color=(red|green|blue)
import sys

from guidance import gbnf_to_lark, lark, models

GBNF = 'root ::= "red" | "green" | "blue"'
lm = models.LlamaCpp(sys.argv[1], echo=False)
lm += "My favourite colour is " + lark(gbnf_to_lark(GBNF), name="color")
