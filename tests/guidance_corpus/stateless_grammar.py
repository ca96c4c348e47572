"""Stateless @guidance functions compose into one grammar, including a recursive one."""
# expect: expr=[0-9()+ ]+
# expect: op=(\+|-)
import sys

import guidance
from guidance import models, regex, select


@guidance(stateless=True)
def number(lm):
    return lm + regex(r"[0-9]{1,2}")


@guidance(stateless=True)
def expression(lm):
    return lm + select([number(), number() + " + " + number(), "(" + expression() + ")"])


@guidance(stateless=True)
def operator(lm):
    return lm + select(["+", "-"], name="op")


lm = models.LlamaCpp(sys.argv[1], echo=False)
lm += "An arithmetic expression: " + guidance.capture(expression(), "expr")
lm += "\nAn operator: " + operator()
