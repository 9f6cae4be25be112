import pytest

from retro_vllm.launch.vllm_cli import asks_for_retro, rewrite, split_retro_flags


def test_only_vllm_serve_with_the_plugin_flag_is_touched():
    assert asks_for_retro(["vllm", "serve", "m", "--plugin", "retro"])
    assert asks_for_retro(["vllm", "serve", "m", "--plugin=retro"])
    assert not asks_for_retro(["vllm", "serve", "m"])
    assert not asks_for_retro(["vllm", "bench", "--plugin", "retro"])


def test_retro_flags_come_out_and_the_rest_stays_in_order():
    rest, plugins, config = split_retro_flags(
        ["vllm", "serve", "m", "--port", "9", "--plugin", "retro", "--retro-config=/x.yaml", "--seed", "0"])
    assert rest == ["vllm", "serve", "m", "--port", "9", "--seed", "0"]
    assert plugins == ["retro"] and str(config) == "/x.yaml"
    with pytest.raises(ValueError):
        split_retro_flags(["vllm", "serve", "m", "--plugin"])


def test_rewrite_adds_engine_flags_unless_given_and_turns_the_plugin_on(monkeypatch):
    monkeypatch.delenv("VLLM_PLUGINS", raising=False)
    argv, env = rewrite(["vllm", "serve", "m", "--plugin", "retro", "--max-lora-rank", "64"])
    assert argv[:3] == ["vllm", "serve", "m"] and "--plugin" not in argv
    assert "--enable-lora" in argv and argv.count("--max-lora-rank") == 1 and "64" in argv
    assert argv[argv.index("--max-loras") + 1] == "3"  # the demo's three domains
    assert env["VLLM_PLUGINS"] == "retro" and env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "1"
    assert env["RETRO_VLLM_CONFIG"].endswith("retro.yaml")


def test_another_plugin_name_is_refused():
    with pytest.raises(ValueError, match="only 'retro'"):
        rewrite(["vllm", "serve", "m", "--plugin", "other"])
