"""Ref extraction from input and output values, string by string against the reference."""

from __future__ import annotations

from typing import Any

import pytest

from engine.refs import extract_refs, input_refs, is_ref, output_refs
from tests.reference import weave_ref

P = "weave-trace-internal:///cHJvamVjdA"
CANDIDATES = [
    f"{P}/object/ds:v1",
    f"{P}/op/agent:abc",
    f"{P}/op/agent",
    f"{P}/op/a:b:c",
    f"{P}/op/agent:abc/",
    f"{P}/object/ds:v1/attr/rows/id/xyz",
    f"{P}/object/ds:v1/attr/rows/id",
    f"{P}/object/ds:v1/bogus/x",
    f"{P}/object/ds:v1/index/0",
    f"{P}/object/ds:v1/index/x",
    f"{P}/object/ds:v1/key/a%20b",
    f"{P}/object/ds:v1/key/a b",
    f"{P}/object/ds:v1/key/a%2fb",
    f"{P}/table/abc",
    f"{P}/table/abc/def",
    f"{P}/table",
    f"{P}/call/123",
    f"{P}/call/123/x",
    f"{P}/agent_turn/t1",
    f"{P}/agent_span/s1",
    f"{P}/agent_conversation/c%201",
    f"{P}/agent_conversation/c 1",
    f"{P}/artifact/x",
    f"{P}/bogus/x",
    f"{P}",
    "weave-trace-internal:///",
    "wandb-artifact:///e/p/a:v1",
    "wandb-artifact:///e/p",
    "wandb-artifact:///e/p/a/b",
    "weave:///e/p/object/ds:v1",  # public: not a ref to the reference
    "plain",
]


@pytest.mark.parametrize("text", CANDIDATES)
def test_internal_refs_match_reference(text: str) -> None:
    if text.startswith("weave:///"):
        assert is_ref(text)
        assert weave_ref.reference_refs([text]) == []
    else:
        assert extract_refs([text]) == weave_ref.reference_refs([text])


PUBLIC = [
    ("weave:///e/p/object/ds:v1", True),
    ("weave:///e/p/op/f:v2/attr/x", True),
    ("weave:///e/p/call/123", True),
    ("weave:///e/p/op/f", False),
    ("weave:///e/p", False),
    ("weave:///e/p/bogus/x", False),
]


@pytest.mark.parametrize(("text", "want"), PUBLIC)
def test_public_refs(text: str, want: bool) -> None:
    assert is_ref(text) is want


VALUES: list[Any] = [
    {"a": f"{P}/object/ds:v1", "b": [f"{P}/op/f:v", {"c": f"{P}/object/ds:v1"}]},
    [f"{P}/op/f:v", f"{P}/object/ds:v1", f"{P}/op/f:v"],
    {"nested": {"deep": [[f"{P}/table/x"]]}, "n": 5, "none": None},
    "weave:///e/p/object/ds:v1",
    None,
]


@pytest.mark.parametrize("value", VALUES)
def test_walk_order_and_dedup(value: Any) -> None:
    public = "weave:///e/p/object/ds:v1"
    got = [r for r in extract_refs(value) if r != public]
    assert got == weave_ref.reference_refs(value)


def test_inputs_and_outputs() -> None:
    inputs = {"x": f"{P}/object/ds:v1", "y": 3}
    assert input_refs(inputs) == [f"{P}/object/ds:v1"]
    assert input_refs(None) == []
    assert output_refs({"o": f"{P}/op/f:v"}) == [f"{P}/op/f:v"]
    assert output_refs(f"{P}/op/f:v") == [f"{P}/op/f:v"]
    assert output_refs(None) == []
