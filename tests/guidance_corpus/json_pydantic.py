"""json() with a pydantic model, bounded by max_tokens (guidance's JSON docs)."""
# expect: person=\{.*
import sys

from pydantic import BaseModel

from guidance import json, models


class Person(BaseModel):
    name: str
    age: int


lm = models.LlamaCpp(sys.argv[1], echo=False)
lm += "A person as JSON: " + json("person", schema=Person, max_tokens=40, temperature=0.0)
print(lm["person"])
