"""Benchmarks: ``python -m bench [--only NAME]`` prints one JSON object per line.

Each ``bench/bench_NAME.py`` module has ``run() -> Iterator[Result]``; a result is
``{"name", "value", "unit"}`` plus, where a baseline is measured in the same run,
``baseline`` and ``ratio`` (how many times better we are; > 1 is better), and ``goal``.
"""
