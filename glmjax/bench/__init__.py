"""Benchmarks: `python -m glmjax.bench --what=data|prepare|step|attention|sweep --config=...`.

Each benchmark lives in its own module here and prints one JSON line.
"""
