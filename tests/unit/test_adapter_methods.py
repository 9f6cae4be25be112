"""The method table: every method keeps the contract of methods/base.py, and the names the
training settings accept are the table's."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
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


# -- who may know method names ------------------------------------------------------------
PACKAGE = Path(__file__).resolve().parents[2] / "retro_vllm"
METHODS_FOLDER = PACKAGE / "adapters" / "methods"


def method_name_comparisons(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Compare):
            continue
        for operand in (node.left, *node.comparators):
            values = operand.elts if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) else [operand]
            if any(isinstance(v, ast.Constant) and v.value in METHODS for v in values):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {ast.unparse(node)}")
                break
    return found


def test_nobody_outside_the_methods_compares_method_names():
    found = [hit for path in sorted(PACKAGE.rglob("*.py"))
             if METHODS_FOLDER not in path.parents
             for hit in method_name_comparisons(path)]
    assert found == [], "ask METHODS[name] (served_as, uses_lora_slot, registrable) instead"


def test_adapters_import_nothing_of_the_server_the_cli_or_the_evaluations():
    forbidden = ("retro_vllm.server", "retro_vllm.cli", "retro_vllm.evaluation")
    found = []
    for path in sorted((PACKAGE / "adapters").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [f"{path.relative_to(PACKAGE)}: {n}" for n in names if n.startswith(forbidden)]
    assert found == []
