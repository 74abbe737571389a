import math
import pickle

import numpy as np
import pytest

from server.errors import FailedPrecondition
from server.results import NotJSON, encode, to_json


def test_to_json_plain_and_numpy():
    assert to_json({"a": [1, 2.5, None, True, "x"], "b": (1, 2)}) == {
        "a": [1, 2.5, None, True, "x"],
        "b": [1, 2],
    }
    value = to_json(np.float64(3.25))
    assert value == 3.25 and type(value) is float
    assert to_json(np.int64(7)) == 7
    assert to_json(np.array(2.0)) == 2.0


@pytest.mark.parametrize(
    "value, message",
    [
        ({1, 2}, "builtins.set"),
        (math.nan, "not a finite number"),
        ({1: "a"}, "dict key 1"),
        (np.arange(3), "numpy.ndarray"),
        (2**60, "too large"),
    ],
)
def test_to_json_refuses(value, message):
    with pytest.raises(NotJSON, match=message):
        to_json(value)


def test_deep_nesting_is_not_json():
    value = []
    for _ in range(100):
        value = [value]
    with pytest.raises(NotJSON, match="nested deeper"):
        to_json(value)


def test_encode_auto_is_json_for_functions_and_pickle_otherwise():
    assert encode(5, "auto", is_function=True).json == 5
    pickled = encode(5, "auto", is_function=False)
    assert pickled.format == "pickle" and pickle.loads(pickled.pickle) == 5
    fallback = encode({1, 2}, "auto", is_function=True)
    assert fallback.format == "pickle" and pickle.loads(fallback.pickle) == {1, 2}
    assert fallback.size_bytes == len(fallback.pickle)


def test_encode_json_refuses_when_impossible():
    with pytest.raises(
        FailedPrecondition, match="no JSON form .*builtins.set.*RESULT_FORMAT_PICKLE"
    ):
        encode({1, 2}, "json", is_function=True)
