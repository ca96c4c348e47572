"""``gen(tools=[fn])``: the model writes a call such as ``add(11, 9)``, the tool runs,
its result is inserted, and generation continues.

The call is spotted in the generated text after every token; text past the
closing parenthesis is backtracked (reason ``tool``).  A ``@guidance`` tool
appends to the model itself (the seed's ``add``); a plain function's return
value is inserted as `` = value``.
"""

from __future__ import annotations

import re
from dataclasses import replace

from tracing import Message

from .grammar import Gen


def run_with_tools(lm, g: Gen):
    tools = {getattr(fn, "__name__", str(fn)): fn for fn in g.tools}
    pattern = re.compile(rb"\b(" + b"|".join(re.escape(n.encode()) for n in tools) + rb")\(([^()\n]*)\)")

    def stop_check(out: bytes) -> int | None:
        m = pattern.search(out)
        return m.end() if m else None

    remaining = g.max_tokens
    plain = replace(g, tools=(), name=None, list_append=False)
    start = len(lm.text_bytes)
    while True:
        step = replace(plain, max_tokens=remaining)
        before = len(lm.text_bytes)
        lm, res = lm.grammar_call(step, stop_check=stop_check, name=g.name or "")
        if remaining is not None:
            remaining -= res.generated + res.forced
        if res.stop_reason != "tool":
            break
        m = pattern.search(lm.text_bytes[before:])
        name, raw_args = m.group(1).decode(), m.group(2).decode()
        args = [a.strip().strip("\"'") for a in raw_args.split(",") if a.strip()]
        fn = tools[name]
        node = lm._open("tool_call", f"{name}({raw_args})")
        inner = lm._replace(_node=node, _container=node)
        try:
            if getattr(fn, "__guidance_program__", False):
                inner = inner + fn(*args)
            else:
                inner = inner + f" = {fn(*args)}"
        except Exception as e:  # a failing tool is reported in the trace, not fatal to the program
            lm.engine.session.store.append(Message(level="error", text=f"tool {name}({raw_args}) failed: {e}"))
            inner = inner + f" = error: {e}"
        inner._close_container(node, "tool")
        lm = inner._replace(_node=node, _container=lm._container)
        if remaining is not None and remaining <= 0:
            break
    if g.name:
        value = lm.text_bytes[start:].decode("utf-8", errors="replace")
        caps = dict(lm._captures)
        caps[g.name] = list(caps.get(g.name, [])) + [value] if g.list_append else value
        lm = lm._replace(_captures=caps)
    return lm
