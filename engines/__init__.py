"""Prompt programs on local models, instrumented per token.

guidance-style: ``lm = models.default(); lm += "Q: ..." + gen("answer", stop="\\n")``.
"""

from . import models
from .errors import ContextOverflow, EngineError, GrammarError, ModelLoadError
from .grammar import gen, json, regex, select
from .model import Model, assistant, guidance, role, system, user

__all__ = ["models", "gen", "json", "regex", "select", "Model", "assistant", "guidance", "role", "system",
           "user", "EngineError", "GrammarError", "ModelLoadError", "ContextOverflow"]
