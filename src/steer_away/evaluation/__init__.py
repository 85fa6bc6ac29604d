"""Evaluation: metrics, MMLU, preference accuracy, sweeps, the results store and reports."""
