import pytest

from retro_vllm.rag.controls import parse_controls
from retro_vllm.rag.errors import RetroHTTPError


def test_defaults():
    controls = parse_controls(None)
    assert controls.retrieval is True and controls.domain is None and controls.top_k is None


@pytest.mark.parametrize(
    "raw, param",
    [
        ("astronomy", "retro"),
        ({"top_k": "3"}, "retro.top_k"),
        ({"retrieval": "no"}, "retro.retrieval"),
        ({"domain": 5}, "retro.domain"),
        ({"filters": ["a"]}, "retro.filters"),
        ({"unknown_key": 1}, "retro.unknown_key"),
    ],
)
def test_wrong_shapes_are_400_naming_the_key(raw, param):
    with pytest.raises(RetroHTTPError) as info:
        parse_controls(raw)
    assert info.value.status == 400
    assert info.value.param == param


def test_valid_controls():
    controls = parse_controls({"domain": "cooking", "top_k": 3, "retrieval": False, "filters": {"lang": ["en", "fr"]}})
    assert controls.domain == "cooking" and controls.top_k == 3 and controls.retrieval is False
