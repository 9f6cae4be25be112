from pathlib import Path

import pytest

from retro_vllm.config import DEMO_CONFIG, ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "retro.yaml"
    path.write_text(text)
    return path


def test_demo_config_is_valid_and_has_three_domains():
    config = load_config(DEMO_CONFIG)
    assert len(config.domains) >= 3
    for domain in config.domains:
        assert all(p.is_file() for p in domain.corpus), domain.name
        assert domain.qa is not None and domain.qa.is_file(), domain.name
        if domain.adapter_seed is not None:
            assert (domain.adapter_seed / "adapter_config.json").is_file(), domain.name
            assert (domain.adapter_seed / "adapter_model.safetensors").is_file(), domain.name


def test_relative_paths_resolve_against_the_file(tmp_path):
    config = load_config(write(tmp_path, "domains:\n  - name: law\n    corpus: [docs/law]\nhome: data\n"))
    assert config.domains[0].corpus == [tmp_path / "docs" / "law"]
    assert config.home_dir == tmp_path / "data"


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("retrieval:\n  top_k: 0\n", "retrieval.top_k"),
        ("retrieval:\n  backend: chroma\n", "retrieval.backend"),
        ("domains:\n  - name: Bad Name\n", "domains.0.name"),
        ("domains:\n  - name: a\n  - name: a\n", "repeated: a"),
        ("serving:\n  max_body_bytes: 10\n", "serving.max_body_bytes"),
        ("surprise: 1\n", "surprise"),
        ("- a list\n", "mapping"),
        ("key: [unclosed\n", "not valid YAML"),
    ],
)
def test_errors_name_the_key_and_file(tmp_path, text, fragment):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert fragment in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
