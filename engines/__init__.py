"""Prompt programs on local models, instrumented per token.

guidance-style: ``lm = models.default(); lm += "Q: ..." + gen("answer", stop="\\n")``.

Every process that uses engines records its runs into the runs directory (see
:mod:`engines.recording`); ``record(path)`` names the file from code.
"""

from . import models
from .errors import ContextOverflow, EngineError, GrammarError, ModelLoadError
from .grammar import gen, json, regex, select
from .model import Model, assistant, guidance, role, system, user
from .recording import record

__all__ = ["models", "gen", "json", "regex", "select", "Model", "assistant", "guidance", "role", "system",
           "user", "record", "EngineError", "GrammarError", "ModelLoadError", "ContextOverflow"]
