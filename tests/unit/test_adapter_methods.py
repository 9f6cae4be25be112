"""The method table: every method keeps the contract of methods/base.py, and the names the
training settings accept are the table's."""

from __future__ import annotations

import importlib
from typing import get_args

import pytest

from retro_vllm.adapters.methods import DEFAULT_LEARNING_RATE, METHODS, AdapterMethod, Method, ServedAs, TrainingConfig


@pytest.mark.parametrize("name", list(METHODS))
def test_each_method_keeps_the_contract(name):
    method = METHODS[name]
    module = importlib.import_module(f"retro_vllm.adapters.methods.{name}")
    assert module.METHOD is method and method.name == name
    assert AdapterMethod in type(method).__mro__
    assert method.served_as in get_args(ServedAs)
    assert method.uses_lora_slot == (method.served_as == "lora")
    assert method.registrable == (method.served_as != "refused")
    assert method.fields and method.fields <= set(TrainingConfig.model_fields)
    for part in ("settings", "training", "served"):
        assert f"\n    {part}" in module.__doc__, f"{name}: the module docstring says nothing on {part}"


def test_the_settings_accept_exactly_the_table():
    assert set(get_args(Method)) == set(METHODS)
    assert len({m.peft_type for m in METHODS.values()}) == len(METHODS)


def test_default_learning_rates():
    assert DEFAULT_LEARNING_RATE == {"lora": 1e-3, "adalora": 1e-3, "ia3": 1e-2, "prompt": 3e-2, "prefix": 1e-2}
