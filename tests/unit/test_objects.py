"""server.objects on its own: dataset names for replicas and the per-replica ObjectStore."""

from __future__ import annotations

import hashlib
import re

import pytest

from server.errors import InvalidArgument, NotFound
from server.objects import DATASET_PREFIX, ObjectStore, dataset_name

OBJECT_ID = "sha256:" + "ab" * 32


def test_a_dataset_name_holds_a_short_owner_hash_and_the_object_s_sha256():
    name = dataset_name("alice", OBJECT_ID)
    owner_hash = hashlib.sha256(b"alice").hexdigest()[:16]
    assert name == f"dask-compute-object-{owner_hash}-{'ab' * 32}"
    assert name.startswith(DATASET_PREFIX)


def test_dataset_names_differ_by_owner_and_by_object():
    other_object = "sha256:" + "cd" * 32
    names = {
        dataset_name("alice", OBJECT_ID),
        dataset_name("bob", OBJECT_ID),
        dataset_name("alice", other_object),
    }
    assert len(names) == 3


@pytest.mark.parametrize(
    "owner", ["cert:CN=worker 7/O=Acme", "ünïcode", "a" * 500, "", "x-y_z@example.com"]
)
def test_any_owner_name_gives_a_safe_fixed_length_name(owner):
    name = dataset_name(owner, OBJECT_ID)
    assert re.fullmatch(r"dask-compute-object-[0-9a-f]{16}-[0-9a-f]{64}", name)


@pytest.mark.parametrize("bad", ["", "ab" * 32, "sha256:xyz", "sha256:" + "AB" * 32])
def test_a_malformed_object_id_has_no_dataset_name(bad):
    with pytest.raises(InvalidArgument, match="64 hex digits"):
        dataset_name("alice", bad)


def test_expire_returns_the_copies_it_dropped_and_keeps_the_adopted_flag():
    store = ObjectStore(ttl=10, max_bytes=100)
    own = store.add("alice", OBJECT_ID, 5, future="f1")
    adopted = store.add("bob", OBJECT_ID, 5, future="f2", adopted=True)
    assert not own.adopted and adopted.adopted
    own.last_used = adopted.last_used = 100.0
    fresh = store.add("carol", OBJECT_ID, 5, future="f3")
    fresh.last_used = 105.0
    assert store.expire(now=112.0) == [own, adopted]
    assert store.held() == [fresh]


def test_drop_frees_only_the_very_copy_it_is_given():
    store = ObjectStore(ttl=10, max_bytes=100)
    old = store.add("alice", OBJECT_ID, 5, future="old")
    new = store.add("alice", OBJECT_ID, 5, future="new")  # replaced meanwhile
    assert store.drop(old) is False
    assert store.has("alice", OBJECT_ID) is new
    assert store.drop(new) is True
    assert store.has("alice", OBJECT_ID) is None
    assert store.drop(new) is False


def test_not_found_says_why_and_what_to_do():
    store = ObjectStore(ttl=30, max_bytes=100)
    with pytest.raises(NotFound) as info:
        store.get("alice", OBJECT_ID)
    message = str(info.value)
    assert OBJECT_ID in message
    assert "was deleted" in message and "expired after 30s unused" in message
    assert "upload it with PutObject" in message


def test_clear_forgets_every_object():
    store = ObjectStore(ttl=10, max_bytes=100)
    store.add("alice", OBJECT_ID, 5, future="f")
    store.clear()
    assert store.held() == [] and store.has("alice", OBJECT_ID) is None
