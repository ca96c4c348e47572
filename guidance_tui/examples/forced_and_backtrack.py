"""A program whose forced text and backtracking are worth looking at.

    guidance-tui run examples/forced_and_backtrack.py

Look for:
* forced tokens: the question joined to the `select` is forced by the grammar,
  and after the model picks a long option's first token, the rest of "Monday,
  the first day of the week" is fast-forwarded too;
* token healing: the prompt ends in " Pa", that token is taken back (a
  `healing` backtrack) and generated again as part of " Paris";
* stop backtracks: `stop="."` hides the period when the model writes one, and
  `eos` backtracks show where the model wanted to end;
* a regex that masks most of the vocabulary (the allowed-set size).
"""

from engines import gen, models, regex, select

lm = models.default()
# A string joined to a grammar with `+` is part of that grammar: its tokens are forced.
lm += "Q: Which day comes after Sunday?\nA: " + select(
    ["Monday, the first day of the week", "Tuesday", "Saturday"], name="day")
# Added on its own, a string is prompt text; the next grammar heals its last token.
lm += "\nThe capital of France is Pa"
lm += regex(r"[a-z]+", name="city")
lm += "\nDate: 20" + regex(r"[0-9]{2}-[0-9]{2}-[0-9]{2}", name="date")
lm += "\nOne fact about Mondays: " + gen("fact", stop=".", max_tokens=30)
lm += ".\nCode word (capitals only): " + regex(r"[A-Z]{3,8}", name="code")
print("day:", lm["day"])
print("city: Pa" + lm["city"])
print("date: 20" + lm["date"])
print("fact:", lm["fact"])
print("code:", lm["code"])
