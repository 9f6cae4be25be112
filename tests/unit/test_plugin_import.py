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


def test_general_plugin_registers_the_resolver_once():
    code = (
        "import retro_vllm.plugin as p; p.register(); p.register();"
        "from vllm.lora.resolver import LoRAResolverRegistry as R;"
        "print(sorted(R.get_supported_resolvers()))"
    )
    assert run(code) == "['retro']"


def test_entry_points_are_registered_under_retro():
    from importlib.metadata import entry_points

    general = {ep.name: ep.value for ep in entry_points(group="vllm.general_plugins")}
    endpoint = {ep.name: ep.value for ep in entry_points(group="vllm.endpoint_plugins")}
    assert general.get("retro") == "retro_vllm.plugin:register"
    assert endpoint.get("retro") == "retro_vllm.plugin:endpoint"
