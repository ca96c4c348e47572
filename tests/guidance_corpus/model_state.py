"""Model state: lm[...], get, set, remove, log_prob, token_count, len, str."""
# expect: word=[a-z]+
# expect: note=set by hand
import math
import sys

from guidance import gen, models

lm = models.LlamaCpp(sys.argv[1], echo=False)
lm += "One word: " + gen("word", regex="[a-z]+", max_tokens=4)
assert lm.get("word") == lm["word"] and "word" in lm
assert lm.get("missing", "default") == "default"
lm2 = lm.set("note", "set by hand")
assert lm2["note"] == "set by hand" and lm2.log_prob("note") is None and "note" not in lm
lm3 = lm2.remove("note")
assert "note" not in lm3
lp = lm.log_prob("word")
assert lp <= 0 and not math.isnan(lp)
assert lm.token_count() > 0 and len(lm) == len(str(lm))
lm = lm2
