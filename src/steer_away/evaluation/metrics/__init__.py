"""Evaluation metrics: plain functions over arrays (`functions.py`), and the per-answer metrics the
report shows as plug-ins (`base.py` the interface, one module per family, `registry.py` the list)."""
