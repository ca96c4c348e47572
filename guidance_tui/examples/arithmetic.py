"""The seed's arithmetic example: an `add` tool, and one base model reused twice.

    guidance-tui run examples/arithmetic.py

Look for: the tool_call node in the tree (the model wrote `add(11, 9)`, the tool
inserted ` = 20`), the `tool` backtrack where the model ran past the call, and
the branch where the base model is reused for a second program.
"""

from engines import gen, guidance, models


@guidance
def add(lm, input1, input2):
    lm += f" = {int(input1) + int(input2)}"
    return lm


base_lm = models.default()

lm = base_lm + """\
1 + 1 = add(1, 1) = 2
3 + 5 = add(3, 5) = 8
11 + 9"""
lm = lm + gen(max_tokens=12, tools=[add], stop="\n")
print(str(lm).splitlines()[-1])

# The same base model again: the trace tree branches instead of breaking.
lm2 = base_lm + "1 + 1 = 2\n3 + 5 = 8\n11 + 9 = " + gen("result", regex=r"[0-9]+")
print("11 + 9 =", lm2["result"])
