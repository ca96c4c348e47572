"""A Lark grammar (llguidance's dialect) as a building block."""
# expect: answer=(yes|no), (because [a-z ]+)?
import sys

from guidance import lark, models

GRAMMAR = r'''
start: ANSWER ", " reason?
ANSWER: "yes" | "no"
reason: "because " /[a-z ]{1,20}/
'''
lm = models.LlamaCpp(sys.argv[1], echo=False)
lm += "Is the sky blue? " + lark(GRAMMAR, name="answer", max_tokens=12)
