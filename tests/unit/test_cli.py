"""`retro-vllm` fails with one line, not a traceback, when what it needs is broken."""

import json
import subprocess
import sys

import pytest
import yaml


def run_cli(*args, env_home):
    # No GPU visible, on any machine: the --device checks below rely on it.
    env = {"RETRO_VLLM_HOME": str(env_home), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, "-m", "retro_vllm.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.fixture
def small_config(tmp_path):
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("\n".join(json.dumps({"id": f"d{i}", "text": f"Passage number {i} about topic {i}."})
                                for i in range(3)))
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"\x00" * 16)  # not a safetensors file
    config = tmp_path / "retro.yaml"
    config.write_text(yaml.safe_dump({"home": str(tmp_path / "home"), "model": {"path": str(model)},
                                      "domains": [{"name": "a", "corpus": [str(corpus)]}]}))
    return config


def test_help_explains_every_command(tmp_path):
    out = run_cli("--help", env_home=tmp_path)
    assert out.returncode == 0
    for command in ("serve", "index", "train", "eval"):
        assert command in out.stdout


def test_bad_config_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("retrieval:\n  top_k: -1\n")
    out = run_cli("serve", "--config", str(bad), env_home=tmp_path)
    assert out.returncode == 2
    assert "retrieval.top_k" in out.stderr and "Traceback" not in out.stderr


def test_corrupt_model_stops_serve_with_one_line(small_config, tmp_path):
    out = run_cli("serve", "--config", str(small_config), env_home=tmp_path)
    assert out.returncode == 2
    assert "model.safetensors" in out.stderr and "unusable" in out.stderr and "Traceback" not in out.stderr


def test_corrupt_index_is_one_line(small_config, tmp_path):
    # `serve` and `eval router` share the index preparation; `eval router` needs no model.
    assert run_cli("index", "--config", str(small_config), env_home=tmp_path).returncode == 0
    versions = tmp_path / "home" / "index" / "versions"
    (next(versions.iterdir()) / "store" / "index.faiss").write_bytes(b"garbage")
    out = run_cli("eval", "router", "--config", str(small_config), env_home=tmp_path)
    assert out.returncode == 2
    assert "corrupt" in out.stderr and "retro-vllm index" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("backend, section", [("qdrant", {"url": "http://127.0.0.1:9", "timeout_s": 1}),
                                              ("weaviate", {"url": "http://127.0.0.1:9", "grpc_port": 9, "timeout_s": 1})])
def test_unreachable_store_server_is_one_line(small_config, tmp_path, backend, section):
    raw = yaml.safe_load(small_config.read_text())
    raw["retrieval"] = {"backend": backend, backend: section}
    small_config.write_text(yaml.safe_dump(raw))
    out = run_cli("index", "--config", str(small_config), env_home=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("retro-vllm: ") and "127.0.0.1:9" in last


def test_unknown_backend_is_one_line(small_config, tmp_path):
    raw = yaml.safe_load(small_config.read_text())
    raw["retrieval"] = {"backend": "milvus"}
    small_config.write_text(yaml.safe_dump(raw))
    out = run_cli("index", "--config", str(small_config), env_home=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "retrieval.backend" in out.stderr and "faiss" in out.stderr


def test_train_on_a_gpu_this_machine_lacks_is_one_line(small_config, tmp_path):
    out = run_cli("train", "--domain", "a", "--device", "cuda", "--config", str(small_config), env_home=tmp_path)
    assert out.returncode == 2
    assert "--device cuda" in out.stderr and "no CUDA GPU" in out.stderr and "Traceback" not in out.stderr
    out = run_cli("train", "--domain", "a", "--device", "tpu", "--config", str(small_config), env_home=tmp_path)
    assert out.returncode == 2 and "choose auto, cpu, cuda or cuda:N" in out.stderr
