"""Errors the engines raise for things a user can fix; each message is one line."""


class EngineError(Exception):
    """Base class: the runner prints ``str(e)`` as one line, without our frames."""


class ModelLoadError(EngineError):
    """The model file or directory is missing, unreadable or not a model."""


class GrammarError(EngineError, ValueError):
    """A grammar, regex or JSON schema that llguidance rejects."""


class ContextOverflow(EngineError):
    """The prompt plus the output no longer fit in the model's context window."""


class Cancelled(KeyboardInterrupt):
    """The run was cancelled from outside (the inspector's quit, Ctrl-C)."""


def one_line(message: object) -> str:
    """Collapse a multi-line library message into one line."""
    text = " ".join(str(message).split())
    return text if len(text) <= 300 else text[:297] + "..."
