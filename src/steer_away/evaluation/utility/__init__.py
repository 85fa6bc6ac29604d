"""Utility under steering: multiple-choice accuracy, in the cloze (acc_norm) or letter format."""
