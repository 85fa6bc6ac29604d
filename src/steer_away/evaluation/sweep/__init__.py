"""Sweeps over methods × their arguments, resumable, locally or spread over a Ray cluster.

A sweep first prepares what every cell shares (profiles, vectors) in its run folder
(artefacts.py), then evaluates each cell (cells.py): generate answers for every (user, prompt)
row, score them, measure the distance to the user's preferred toxicity and the perplexity, and
answer MMLU under the same steering. The runners (runners.py) write rows to the results store
batch by batch, so a killed sweep resumes where it stopped and a changed config computes only
the cells it adds.
"""

from steer_away.evaluation.sweep.cells import Cell, EvalContext, EvalRow, cell_key, compute_cell
from steer_away.evaluation.sweep.config import MethodGrid, SweepConfig, SweepConfigError
from steer_away.evaluation.sweep.runners import SweepResult, run_sweep

__all__ = ["Cell", "EvalContext", "EvalRow", "MethodGrid", "SweepConfig", "SweepConfigError", "SweepResult",
           "cell_key", "compute_cell", "run_sweep"]
