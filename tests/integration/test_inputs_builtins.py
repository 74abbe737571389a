"""The built-in ``pi`` with a chunk of 4e8 points is refused, not computed (gigabytes)."""

from __future__ import annotations

import pytest

from client_sdk.errors import InvalidArguments, StatusCode

pytestmark = pytest.mark.integration


def test_pi_past_its_bound_answers_invalid_argument_naming_it(local_client):
    with pytest.raises(InvalidArguments) as caught:
        local_client.run("pi", samples=4e8, chunks=4e8, scheduler="threads")
    assert caught.value.code is StatusCode.INVALID_ARGUMENT
    assert "chunks must be at most 1,000,000" in str(caught.value)
    assert local_client.run("pi", samples=20_000, chunks=10_000, seed=1, scheduler="threads") > 2
