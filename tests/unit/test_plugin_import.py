import subprocess
import sys


def run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_importing_the_plugin_loads_no_torch_or_vllm():
    code = (
        "import sys, retro_vllm, retro_vllm.plugin, retro_vllm.envs, retro_vllm.config;"
        "heavy = [m for m in ('torch', 'vllm', 'transformers', 'faiss') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    assert run(code) == ""


def test_general_plugin_registers_the_resolver_and_the_gguf_loader_once():
    code = (
        "import retro_vllm.plugin as p; p.register(); p.register();"
        "from vllm.lora.resolver import LoRAResolverRegistry as R;"
        "from vllm.config.load import LoadConfig;"
        "from vllm.model_executor.model_loader import get_model_loader;"
        "print(sorted(R.get_supported_resolvers()), type(get_model_loader(LoadConfig(load_format='retro-gguf'))).__name__)"
    )
    # The last line: vLLM logs each loader it registers to stdout.
    assert run(code).splitlines()[-1] == "['retro'] GGUFModelLoader"


def test_entry_points_are_registered_under_retro():
    from importlib.metadata import entry_points

    general = {ep.name: ep.value for ep in entry_points(group="vllm.general_plugins")}
    endpoint = {ep.name: ep.value for ep in entry_points(group="vllm.endpoint_plugins")}
    assert general.get("retro") == "retro_vllm.plugin:register"
    assert endpoint.get("retro") == "retro_vllm.plugin:endpoint"
