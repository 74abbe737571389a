from typing import Any, Optional

import pytest

from server.builtins import builtins
from server.errors import FunctionNotFound, InvalidArgument
from server.registry import Registry, convert_json, describe, json_type


def test_builtins_are_registered_with_signatures():
    names = [spec.name for spec in builtins]
    assert names == ["add", "fib", "pi", "ping", "sleep"]
    pi = builtins.get("pi")
    assert pi.lazy
    assert pi.signature == (
        "pi(samples: integer = 1000000, chunks: integer = 100000, seed: integer|null = null) -> any"
    )
    assert builtins.get("add").signature == "add(a: number, b: number) -> number"
    assert "Fibonacci" in builtins.get("fib").description


@pytest.mark.parametrize(
    "annotation, expected",
    [
        (int, "integer"),
        (float, "number"),
        (str, "string"),
        (bool, "boolean"),
        (list[int], "array"),
        (dict[str, int], "object"),
        (int | None, "integer|null"),
        (Optional[str], "string|null"),  # noqa: UP045  (the old spelling is read too)
        (Any, "any"),
        (object, "any"),
    ],
)
def test_json_type(annotation, expected):
    assert json_type(annotation) == expected


@pytest.mark.parametrize(
    "value, annotation, expected",
    [
        (20.0, int, 20),
        (20, int, 20),
        (2.5, float, 2.5),
        (2.0, float, 2),
        (True, bool, True),
        ("a", str, "a"),
        (None, int | None, None),
        (3.0, int | None, 3),
        ([1.0, 2.0], list[int], [1, 2]),
        ({"a": 1.0}, dict[str, int], {"a": 1}),
        ([1.0, "x"], tuple[int, str], (1, "x")),
        ({"n": [1.0, 2.5]}, Any, {"n": [1, 2.5]}),
    ],
)
def test_convert_json_accepts(value, annotation, expected):
    out = convert_json(value, annotation)
    assert out == expected
    assert type(out) is type(expected)


@pytest.mark.parametrize(
    "value, annotation",
    [
        (20.5, int),
        ("a", int),
        (True, int),
        (True, float),
        (1.0, str),
        (1.0, bool),
        ("x", list[int]),
        ([1.5], list[int]),
        ({"a": "b"}, dict[str, int]),
        ("a", int | None),
        (float("inf"), int),
        ([1.0], tuple[int, int]),
    ],
)
def test_convert_json_refuses(value, annotation):
    with pytest.raises(TypeError):
        convert_json(value, annotation)


def test_bind_converts_and_reports_signature():
    add = builtins.get("add")
    assert add.bind([2.0, 3.0], {}) == ([2, 3], {})
    with pytest.raises(
        InvalidArgument, match=r"missing required argument 'b'.*signature: add\(a: number"
    ):
        add.bind([2.0], {})
    with pytest.raises(InvalidArgument, match="takes 2 positional arguments but 3 were given"):
        add.bind([1.0, 2.0, 3.0], {})
    with pytest.raises(InvalidArgument, match="unexpected keyword argument 'c'"):
        add.bind([1.0], {"b": 1.0, "c": 2.0})
    with pytest.raises(InvalidArgument, match="multiple values for argument 'a'"):
        add.bind([1.0], {"a": 1.0, "b": 2.0})
    with pytest.raises(
        InvalidArgument, match="argument 'n' must be integer: expected an integer, got number 20.5"
    ):
        builtins.get("fib").bind([20.5], {})


def test_keyword_only_and_var_parameters():
    def f(a: int, *rest, flag: bool = False, **extra):
        return a

    spec = describe(f, name="f")
    assert spec.signature == "f(a: integer, flag: boolean = false, *args, **kwargs) -> any"
    args, kwargs = spec.bind([1.0, 2.0, "x"], {"flag": True, "other": 3.0})
    assert args == [1, 2, "x"]
    assert kwargs == {"flag": True, "other": 3}
    with pytest.raises(InvalidArgument, match="must be boolean"):
        spec.bind([1.0], {"flag": 1.0})


def test_registry_lookup_and_duplicates():
    reg = Registry()

    @reg.function(name="double")
    def twice(x: int) -> int:
        return 2 * x

    assert twice(2) == 4  # the decorator returns the function unchanged
    assert "double" in reg and len(reg) == 1
    with pytest.raises(
        FunctionNotFound, match="no function named 'nope'; this server offers: double"
    ):
        reg.get("nope")
    with pytest.raises(ValueError, match="already registered"):
        reg.add(lambda x: x, name="double")


def test_positional_only_parameters_are_refused():
    def f(a, /):
        return a

    with pytest.raises(ValueError, match="positional-only"):
        describe(f, name="f")
