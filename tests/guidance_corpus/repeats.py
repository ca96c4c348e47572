"""one_or_more, zero_or_more, optional, exactly_n_repeats, at_most_n_repeats, sequence."""
# expect: digits=[0-9]+
# expect: letters=[a-z]{3}
# expect: maybe=(!)?
# expect: few=(ab){0,2}
import sys

from guidance import (at_most_n_repeats, capture, exactly_n_repeats, models, one_or_more, optional, regex,
                      sequence, token_limit, zero_or_more)

lm = models.LlamaCpp(sys.argv[1], echo=False)
lm += "Digits: " + capture(at_most_n_repeats(regex("[0-9]"), 4) + token_limit(one_or_more("7"), 3), "digits")
lm += "\nLetters: " + capture(exactly_n_repeats(regex("[a-z]"), 3), "letters")
lm += capture(optional("!"), "maybe")
lm += "\nPairs: " + capture(sequence("ab", 0, 2), "few") + zero_or_more(" ") + "."
