"""special_token and string building blocks, with a role block written by hand."""
# expect: reply=(?s).*
import sys

from guidance import gen, models, special_token, string

lm = models.LlamaCpp(sys.argv[1], echo=False)
lm += string("<start_of_turn>user\nHello!") + special_token("<end_of_turn>") + "\n<start_of_turn>model\n"
lm += gen("reply", max_tokens=6)
