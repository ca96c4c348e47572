"""gen with a regex, and the regex() building block."""
# expect: year=[0-9]{4}
# expect: digit=[0-9]
import sys

from guidance import gen, models, regex

lm = models.LlamaCpp(sys.argv[1], echo=False)
lm += "The Berlin wall fell in the year " + gen("year", regex=r"[0-9]{4}")
lm += ". One digit: " + regex(r"[0-9]", name="digit")
