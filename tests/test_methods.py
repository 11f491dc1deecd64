"""hvpl.continual.methods: looking methods up by name or passing a Method through; base variants."""
import pytest

from hvpl.continual.methods import METHODS, Method, get_method
from hvpl.utils.errors import HVPLError


def test_get_method_by_name_or_method():
    for name, method in METHODS.items():
        assert get_method(name) is method
        assert get_method(method) is method
    own = Method("own", True, False, False, True, True)
    assert get_method(own) is own
    with pytest.raises(HVPLError, match="unknown method 'nope'"):
        get_method("nope")


def test_base_variants():
    assert {m.name: m.base_variant for m in METHODS.values()} == {
        "hvpl": "context", "hvpl_no_ogc": "context", "hvpl_ogc_authors": "context",
        "hvpl_no_video_prompts": "context", "hvpl_no_context": "no_context", "eclipse": "context", "finetune": "context", "joint": "joint"}
