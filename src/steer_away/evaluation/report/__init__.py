"""Reports from the results store: tables shaped like the studies' (CSV + Markdown) and PNG plots.

`analysis` computes (typed rows, intervals, paired tests), `markdown`, `csv_files` and `plots`
render, `writer` reads the store and writes every file.
"""

from steer_away.evaluation.report.writer import write_report

__all__ = ["write_report"]
