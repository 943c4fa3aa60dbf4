"""The benchmarks behind the tables in docs/: each script prints or writes one table.

Run each from the repository root as a module, ``python -m benchmarks.<script> --help``. The
code the scripts share (the quality harness, statistics, timing, calibration, the peer rows,
the report template and the plots) is in :mod:`benchmarks.common`; what the tests share with the
benchmarks (the coverage matrix, op counting, the tiny models) is in ``smoothcache.testing``.
"""
