"""A program whose forced text and backtracking are worth looking at.

    guidance-tui run examples/forced_and_backtrack.py

Look for:
* forced tokens: after the model picks a long option's first token, the rest
  of "Monday, the first day of the week" is fast-forwarded by the grammar;
* token healing: the prompt ends in "Date: 20", the last token is taken back
  (a `healing` backtrack) and generated again together with the year;
* stop backtracks: `stop="."` hides the period the model wrote;
* a regex that masks most of the vocabulary (the allowed-set size).
"""

from engines import gen, models, regex, select

lm = models.default()
lm += "Q: Which day comes after Sunday?\nA: " + select(
    ["Monday, the first day of the week", "Tuesday", "Saturday"], name="day")
lm += "\nDate: 20" + regex(r"[0-9]{2}-[0-9]{2}-[0-9]{2}", name="date")
lm += "\nOne fact about Mondays: " + gen("fact", stop=".", max_tokens=30)
lm += ".\nCode word (capitals only): " + regex(r"[A-Z]{3,8}", name="code")
print("day:", lm["day"])
print("date: 20" + lm["date"])
print("fact:", lm["fact"])
print("code:", lm["code"])
