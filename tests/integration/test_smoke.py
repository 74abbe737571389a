import pytest

pytestmark = pytest.mark.integration


def test_run_add(client):
    assert client.run("add", 2, 3) == 5
    assert client.run("greet", "dask") == "hello dask!"
