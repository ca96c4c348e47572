"""Chat roles: a system prompt, a user turn, and the assistant's answer (guidance README)."""
# expect: answer=(?s).+
import sys

import guidance
from guidance import assistant, gen, system, user

lm = guidance.models.LlamaCpp(sys.argv[1], echo=False)
with system():
    lm += "You are a helpful assistant."
with user():
    lm += "What is the capital of France?"
with assistant():
    lm += gen("answer", max_tokens=8, stop="\n")
print(lm["answer"])
