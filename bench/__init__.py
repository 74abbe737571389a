"""The benchmark suite: the service side by side with direct Dask, in one run.

``python -m bench`` starts its own server (``dask-compute serve``) and its own
direct ``LocalCluster`` of the same shape, measures each figure against both,
and prints one table; ``python -m bench --quick`` is the short run the test
suite uses so that the suite cannot rot. See :mod:`bench.__main__`.
"""
