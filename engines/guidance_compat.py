"""``import guidance`` answered by engines, for scripts run under guidance-tui when the real
guidance is not installed in that interpreter.

:func:`install` puts a finder on ``sys.meta_path`` that serves ``guidance``,
``guidance.models`` and ``guidance.library`` from engines, and says so once
(``on_import``) when the script first imports it.  The ``guidance`` module is
callable, as the real one is: ``import guidance`` then ``@guidance`` works.
:func:`install` returns the function that removes the finder and the modules
it made, so the hosting process is left as it was.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from typing import Callable

NOTICE = "guidance: using guidance-tui's engines (guidance is not installed here)"
_SERVED = ("guidance", "guidance.models", "guidance.library")


class _CallableModule(types.ModuleType):
    """``guidance`` itself is the decorator in guidance: ``@guidance`` and ``@guidance(stateless=True)``."""

    def __call__(self, f=None, **kwargs):
        from .program import guidance as decorate

        return decorate(f, **kwargs)


def _fill(module: types.ModuleType, name: str) -> None:
    import engines
    from engines import library, models

    if name == "guidance":
        for attr in engines.__all__:
            if attr not in ("record", "EngineError", "GrammarError", "ModelLoadError", "ContextOverflow"):
                setattr(module, attr, getattr(engines, attr))
        module.models = sys.modules.get("guidance.models") or _make("guidance.models")
        module.library = sys.modules.get("guidance.library") or _make("guidance.library")
        module.__version__ = "0.3.1"
        module.__path__ = []  # a package: its submodules come through the finder
        module.__all__ = [a for a in dir(module) if not a.startswith("_")]
    elif name == "guidance.models":
        for attr in ("LlamaCpp", "Transformers", "Model", "OpenAI", "Mock", "OnnxRuntimeGenAI",
                     "create_azure_openai_model", "create_azure_aifoundry_model"):
            setattr(module, attr, getattr(models, attr))
        for attr in ("OpenAICompatible",):  # a remote engine, where one is available
            if hasattr(models, attr):
                setattr(module, attr, getattr(models, attr))
    elif name == "guidance.library":
        for attr in library.__all__:
            setattr(module, attr, getattr(library, attr))
        from .model import assistant, block, role, system, user

        for f in (assistant, block, role, system, user):
            setattr(module, f.__name__, f)


def _make(name: str) -> types.ModuleType:
    module = _CallableModule(name) if name == "guidance" else types.ModuleType(name)
    module.__file__ = __file__
    module.__loader__ = _LOADER
    module.__spec__ = importlib.machinery.ModuleSpec(name, _LOADER, is_package=name == "guidance")
    sys.modules[name] = module
    _fill(module, name)
    return module


class _Loader(importlib.abc.Loader):
    def create_module(self, spec):
        module = _CallableModule(spec.name) if spec.name == "guidance" else types.ModuleType(spec.name)
        return module

    def exec_module(self, module) -> None:
        _fill(module, module.__name__)


_LOADER = _Loader()


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self, on_import: Callable[[str], None]) -> None:
        self.on_import = on_import
        self.told = False

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "guidance" and not fullname.startswith("guidance."):
            return None
        if fullname not in _SERVED:
            raise ModuleNotFoundError(f"{fullname} is not provided by guidance-tui's engines (only guidance, "
                                      "guidance.models and guidance.library are); install guidance and run "
                                      "with --python to use it", name=fullname)
        if not self.told:
            self.told = True
            self.on_import(NOTICE)
        return importlib.machinery.ModuleSpec(fullname, _LOADER, is_package=fullname == "guidance")


def real_guidance_available() -> bool:
    mod = sys.modules.get("guidance")
    if mod is not None:
        return getattr(mod, "__loader__", None) is not _LOADER
    try:
        return importlib.util.find_spec("guidance") is not None
    except (ImportError, ValueError):
        return False


def install(on_import: Callable[[str], None]) -> Callable[[], None]:
    """Serve ``import guidance`` from engines unless the real guidance is importable here.

    Returns the function that undoes it (a no-op when nothing was installed).
    """
    if real_guidance_available():
        return lambda: None
    finder = _Finder(on_import)
    sys.meta_path.insert(0, finder)

    def uninstall() -> None:
        try:
            sys.meta_path.remove(finder)
        except ValueError:
            pass
        for name in [n for n in sys.modules if n == "guidance" or n.startswith("guidance.")]:
            if getattr(sys.modules[name], "__loader__", None) is _LOADER:
                del sys.modules[name]

    return uninstall
