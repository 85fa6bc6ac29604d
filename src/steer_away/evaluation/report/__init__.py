"""Reports from the results store: tables shaped like the studies' (CSV + Markdown) and PNG plots.

`analysis` (main, category, sensitivity and change-source rows), `robustness` (Δ% without the most
influential prompt, prompt concentration) and `personalisation` (head to head against population
steering, PPA against the population predictor) compute typed rows with intervals; `findings` gathers
them; `markdown`, `csv_files` and `plots` render; `writer` reads the store and writes every file.
"""

from steer_away.evaluation.report.writer import write_report

__all__ = ["write_report"]
