"""Role markers (opener and closer text) from the model's own chat template.

A template shipped with the model (GGUF ``tokenizer.chat_template`` or a
tokenizer's ``chat_template``) is rendered with a sentinel message and split
around it.  Models that ship none (the base Gemma 3 270M GGUF does not) get
their family's known turn format, and ChatML as the last resort.
"""

from __future__ import annotations

from functools import lru_cache

_SENTINEL = "\x00GTUI-CONTENT\x00"

_GEMMA = {
    "system": ("<start_of_turn>system\n", "<end_of_turn>\n"),
    "user": ("<start_of_turn>user\n", "<end_of_turn>\n"),
    "assistant": ("<start_of_turn>model\n", "<end_of_turn>\n"),
}
_CHATML = {r: (f"<|im_start|>{r}\n", "<|im_end|>\n") for r in ("system", "user", "assistant")}


def role_markers(template: str | None, architecture: str = "", bos: str = "") -> dict[str, tuple[str, str]]:
    """{role: (opener, closer)} for system, user and assistant."""
    if template:
        try:
            return _from_template(template, bos)
        except Exception:
            pass  # a template we cannot render in isolation: fall back to the family format
    if architecture.startswith("gemma"):
        return dict(_GEMMA)
    return dict(_CHATML)


@lru_cache(maxsize=16)
def _from_template(template: str, bos: str) -> dict[str, tuple[str, str]]:
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(msg):
        raise jinja2.TemplateError(msg)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    tpl = env.from_string(template)

    def render(messages) -> str:
        return tpl.render(messages=messages, add_generation_prompt=False, bos_token=bos, eos_token="")

    out = {}
    for role in ("system", "user", "assistant"):
        try:
            text = render([{"role": role, "content": _SENTINEL}])
            prefix = ""
        except jinja2.TemplateError:  # templates that insist on a user turn first
            prefix = render([{"role": "user", "content": "x"}])
            text = render([{"role": "user", "content": "x"}, {"role": role, "content": _SENTINEL}])
        if _SENTINEL not in text:
            raise ValueError(f"template drops the {role} message")
        opener, closer = text.split(_SENTINEL, 1)
        opener = opener[len(prefix):] if prefix and opener.startswith(prefix) else opener
        if bos and opener.startswith(bos):
            opener = opener[len(bos):]
        out[role] = (opener, closer)
    return out
