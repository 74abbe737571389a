"""``python -m server``: the same as ``dask-compute serve``."""

from server.cli import serve

if __name__ == "__main__":  # the guard matters: spawned workers re-import __main__
    serve(prog_name="python -m server")
