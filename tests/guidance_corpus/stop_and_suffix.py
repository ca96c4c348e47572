"""gen with a stop list, a stop regex, save_stop_text and suffix."""
# expect: first=[^.!]*
# expect: first_stop_text=(\.|!)?
# expect: second=(?s)[^0-9]*
# expect: third=[^,]*
import sys

from guidance import gen, models

lm = models.LlamaCpp(sys.argv[1], echo=False)
lm += "Say hi: " + gen("first", stop=[".", "!"], save_stop_text=True, max_tokens=10)
lm += "\nCount: " + gen("second", stop_regex=r"[0-9]", max_tokens=10)
lm += "\nList: " + gen("third", stop=",", suffix="\n", max_tokens=10)
assert str(lm).endswith("\n")
