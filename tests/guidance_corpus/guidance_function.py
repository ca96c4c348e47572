"""A stateful @guidance function with f-string embedded gens and a dedented multi-line prompt."""
# expect: name=[A-Za-z ]+
# expect: job=(?s).+
import sys

import guidance
from guidance import gen, models, select


@guidance
def character(lm, role):
    lm += f"""\
    Character sheet
    Role: {role}
    Name: {gen("name", regex="[A-Z][a-z]+( [A-Z][a-z]+)?")}
    Job: {gen("job", stop=chr(10), max_tokens=6)}"""
    return lm


lm = models.LlamaCpp(sys.argv[1], echo=False)
lm += character("a wizard")
assert "\n    Role" not in str(lm), "dedent=True strips the indentation"
print(lm["name"], "/", lm["job"])
