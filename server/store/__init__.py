"""The durable job store: SQLite by default, PostgreSQL for replicas that share records.

One implementation for both, on SQLAlchemy Core, in parts:

* :mod:`~server.store.schema`: the tables, the row <-> record mapping, the engine, the
  SQLite file's lock;
* :mod:`~server.store.writer`: the group-commit writer thread and its typed batch;
* :mod:`~server.store.reader`: the reader threads where every call that waits on the
  database runs;
* :mod:`~server.store.copies`: this process's copies of records, and the writes that
  store them;
* :mod:`~server.store.queries`: the SQL of the reads;
* :mod:`~server.store.sql`: :class:`SqlJobTable`, the :class:`server.jobs.JobTable`
  interface over those parts;
* :mod:`~server.store.registry`: :class:`ReplicaRegistry`, what replicas sharing a store
  know of each other (``SqlJobTable.registry``; ``None`` on SQLite).
"""

from server.jobs import NewJob
from server.store.registry import ReplicaRegistry
from server.store.schema import (
    StoreInUse,
    jobs_table,
    make_engine,
    object_uses_table,
    replicas_table,
)
from server.store.sql import SqlJobTable

__all__ = [
    "NewJob",
    "ReplicaRegistry",
    "SqlJobTable",
    "StoreInUse",
    "jobs_table",
    "make_engine",
    "object_uses_table",
    "replicas_table",
]
