"""`python -m retro_vllm.launch.api_server`: vLLM's API server without the scipy and scikit-learn that
transformers and vLLM import at start-up when installed. Each case runs in a fresh interpreter:
what is imported is process-wide."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


def run(code: str, *args: str, timeout: float = 300) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          timeout=timeout, cwd="/")
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


@pytest.mark.parametrize("hide", [False, True])
def test_transformers_modeling_code_imports_scipy_and_sklearn_only_when_not_hidden(hide):
    loaded = run("""
        import sys
        from retro_vllm.launch.api_server import hide_from_transformers
        if sys.argv[1] == "True":
            assert hide_from_transformers()
        import transformers.loss.loss_utils, transformers.generation.candidate_generator
        print(sorted({"scipy.optimize", "sklearn"} & set(sys.modules)))
    """, str(hide))
    # Without the change they load (so this test can fail); with it, neither does.
    assert loaded == ("[]" if hide else "['scipy.optimize', 'sklearn']")


def test_a_forked_child_gets_transformers_real_answers_back():
    out = run("""
        import os
        from retro_vllm.launch.api_server import hide_from_transformers
        from transformers.utils import import_utils
        hide_from_transformers()
        hide_from_transformers()  # idempotent: a second call does not wrap the wrapper
        parent = (import_utils.is_scipy_available(), import_utils.is_sklearn_available(),
                  import_utils.is_torch_available())
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.write(write, repr((import_utils.is_scipy_available(), import_utils.is_sklearn_available())).encode())
            os._exit(0)
        os.waitpid(pid, 0)
        print(parent, os.read(read, 100).decode())
    """)
    assert out == "(False, False, True) (True, True)"


def test_a_deferred_module_loads_on_first_attribute_not_on_import_or_inspection():
    out = run("""
        import inspect, sys
        from retro_vllm.launch.api_server import load_on_first_use
        assert load_on_first_use("scipy.signal")
        assert not load_on_first_use("scipy.signal")  # already registered
        assert not load_on_first_use("no_such_module_here")
        import scipy.signal as signal
        inspect.getmodule(sys._getframe())  # walks sys.modules reading __file__ (torch does at import)
        before = "scipy.signal._signaltools" in sys.modules
        from scipy.signal import resample_poly
        print(before, resample_poly([1.0, 2.0, 3.0, 4.0], 2, 1).shape, signal.resample_poly is resample_poly,
              type(sys.modules["scipy.signal"]).__name__)
    """)
    assert out == "False (8,) True module"


def test_the_launcher_is_vllms_api_server():
    help_text = run("""
        import runpy, sys
        sys.argv = ["retro_vllm.launch.api_server", "--help"]
        try:
            runpy.run_module("retro_vllm.launch.api_server", run_name="__main__")
        except SystemExit as exit:
            assert exit.code in (0, None), exit.code
        print("scipy.signal._signaltools" in sys.modules, "sklearn" in sys.modules)
    """)
    assert "--max-model-len" in help_text and "--enable-lora" in help_text
    assert help_text.splitlines()[-1] == "False False"
