"""Benchmarks of the non-functional targets (SPEC "Non-functional targets").

Each module has a ``run(...) -> dict`` that the ``datatong bench`` commands print as JSON.
"""
