"""vLLM's OpenAI-compatible API server as `retro-vllm serve` starts it: vLLM's own, without
loading scipy and scikit-learn up front.

retro-vllm's environment has scipy and scikit-learn because sentence-transformers requires them;
a stock vLLM environment has neither. When they are installed, vLLM's API server loads them at
start-up without using them: transformers' modeling code imports scipy.optimize (object-detection
losses) and scikit-learn (an assisted-generation heuristic), and vLLM's audio module imports
scipy.signal (resampling, used only when a request carries audio). That was about 110 MB of the
API server's resident memory (measured: vLLM's API-server module alone, 688 MB in our
environment vs 578 MB in a stock one). So before vLLM starts, this process
- makes transformers' availability checks report scipy and scikit-learn absent (only those
  checks: code that imports them itself still gets them), and
- registers scipy.signal as a lazy module, loaded on its first use.
A process forked from this one gets transformers' real answers back.

    python -m retro_vllm.launch.api_server ARGS...   # the same arguments as vLLM's api_server
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import threading
import types

logger = logging.getLogger(__name__)

UNUSED_HERE = ("scipy", "sklearn")
"""Import names that transformers' modeling code imports only for training-time or
generation-time features that vLLM's API server never calls."""


def hide_from_transformers(names: tuple[str, ...] = UNUSED_HERE) -> bool:
    """Make transformers' `is_<name>_available()` checks answer False for `names` in this process.
    False (and nothing changed) when this transformers has no such checks to change."""
    try:
        from transformers.utils import import_utils
    except ImportError:
        return False
    real = getattr(import_utils, "_is_package_available", None)
    checks = [getattr(import_utils, f"is_{name}_available", None) for name in names]
    if real is None or getattr(real, "retro_hidden", None) is not None:
        return real is not None

    def is_package_available(pkg_name: str, return_version: bool = False):
        if pkg_name in names:
            return (False, "N/A") if return_version else (False, None)
        return real(pkg_name, return_version)

    def forget_cached_answers() -> None:
        for check in checks:
            getattr(check, "cache_clear", lambda: None)()

    def restore() -> None:
        import_utils._is_package_available = real
        forget_cached_answers()

    is_package_available.retro_hidden = names
    import_utils._is_package_available = is_package_available
    forget_cached_answers()  # an answer given before the change would outlive it
    os.register_at_fork(after_in_child=restore)
    return True


LOADED_ON_FIRST_USE = ("scipy.signal",)


class _Deferred(types.ModuleType):
    """Stands in for a module until one of its attributes is read, then imports it. Its spec,
    file and path are set up front, so code that walks sys.modules reading those (inspect does,
    for every torch custom op registered) does not load it; importlib's LazyLoader loads on any
    attribute and so loaded scipy.signal during vLLM's start-up."""

    def __getattr__(self, attr: str):
        with _load_lock:
            real = sys.modules.get(self.__name__)
            if real is self:
                del sys.modules[self.__name__]
                try:
                    real = importlib.import_module(self.__name__)
                except BaseException:
                    sys.modules[self.__name__] = self  # the next use tries again and fails the same way
                    raise
            self.__dict__.update(real.__dict__)  # later reads of this stand-in skip the lookup
        return getattr(real, attr)


_load_lock = threading.RLock()  # reentrant: the module's own import may read from its stand-in


def load_on_first_use(name: str) -> bool:
    """Register a stand-in for `name` in sys.modules: importing it costs nothing until an
    attribute of it is read. False when it is not installed or already imported."""
    if name in sys.modules:
        return False
    try:
        spec = importlib.util.find_spec(name)
    except ImportError:
        return False
    if spec is None or spec.origin is None:
        return False
    module = _Deferred(name)
    module.__spec__, module.__file__, module.__loader__ = spec, spec.origin, spec.loader
    module.__package__ = name if spec.submodule_search_locations is not None else name.rpartition(".")[0]
    if spec.submodule_search_locations is not None:
        module.__path__ = list(spec.submodule_search_locations)
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)
    return True


def main() -> None:
    for name in LOADED_ON_FIRST_USE:
        load_on_first_use(name)
    if not hide_from_transformers():
        logger.warning("retro: this transformers has no availability checks to change; "
                       "the API server imports scipy and scikit-learn as usual")
    from retro_vllm.compat.launcher import run_api_server

    run_api_server()


if __name__ == "__main__":
    main()
