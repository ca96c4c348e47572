"""token_limit and with_temperature around grammars; gen's temperature and top_p."""
# expect: short=(?s).*
# expect: warm=(?s).*
import sys

from guidance import gen, models, token_limit, with_temperature

lm = models.LlamaCpp(sys.argv[1], echo=False)
lm += "A story: " + token_limit(gen("short"), 4)
lm += "\nMore: " + with_temperature(gen("warm", max_tokens=4, top_p=0.9), 0.7)
