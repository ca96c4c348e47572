"""json() with a schema as a JSON string, as a dict with separators, and a TypeAdapter."""
# expect: flag=(true|false)
# expect: point=\{"x": ?-?[0-9]+, ?"y": ?-?[0-9]+\}
# expect: nums=\[.*
import sys

from pydantic import TypeAdapter

from guidance import json, models

lm = models.LlamaCpp(sys.argv[1], echo=False)
lm += "A boolean: " + json("flag", schema='{"type": "boolean"}')
point = {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
         "required": ["x", "y"], "additionalProperties": False}
lm += "\nA point: " + json("point", schema=point, separators=(",", ":"), max_tokens=20)
lm += "\nNumbers: " + json("nums", schema=TypeAdapter(list[int]), max_tokens=12)
