"""Prompt programs on local models, instrumented per token.

guidance-style, with guidance 0.3.1's program API:
``lm = models.default(); lm += "Q: ..." + gen("answer", stop="\\n")``.

Every process that uses engines records its runs into the runs directory (see
:mod:`engines.recording`); ``record(path)`` names the file from code.
"""

from . import library, models
from .errors import ContextOverflow, EngineError, GrammarError, ModelLoadError
from .library import (at_most_n_repeats, audio, capture, exactly_n_repeats, gbnf_to_lark, gen, gen_audio, gen_image,
                      gen_video, image, json, lark, one_or_more, optional, regex, select, sequence, special_token,
                      string, substring, token_limit, video, with_temperature, zero_or_more)
from .model import Model, assistant, block, role, system, user
from .program import guidance
from .recording import record
from .tools import Tool

__all__ = ["models", "library", "gen", "json", "regex", "select", "capture", "one_or_more", "zero_or_more",
           "optional", "sequence", "at_most_n_repeats", "exactly_n_repeats", "substring", "string", "special_token",
           "lark", "gbnf_to_lark", "token_limit", "with_temperature", "image", "audio", "video", "gen_image",
           "gen_audio", "gen_video", "block", "Tool", "Model", "assistant", "guidance", "role", "system", "user",
           "record", "EngineError", "GrammarError", "ModelLoadError", "ContextOverflow"]
