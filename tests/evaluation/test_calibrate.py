"""Calibration: the window and the collapse onset follow from the points; the run is real generation."""

import json

import pytest
import torch

from steer_away.evaluation.calibrate import Calibration, CalibrationPoint, calibrate, save_calibration
from steer_away.scoring.jigsaw import JigsawBiLSTMScorer
from steer_away.steering.methods.activation import ActivationSteering
from steer_away.steering.vectors.vector import SteeringVector


def point(alpha, tox, usable=True, collapsed=0.0, spread=0.01):
    change = tox - 0.10  # α = 0 sits at 0.10 in these cases
    return CalibrationPoint(alpha, tox, (tox - 0.01, tox + 0.01), 0.9, collapsed, 5.0, usable, "text", change,
                            (change - spread, change + spread))


def test_window_onset_and_recommendation_by_hand():
    points = [point(0, 0.10), point(0.5, 0.12), point(1, 0.08), point(1.5, 0.07, spread=0.05), point(2, 0.05),
              point(3, 0.048), point(4, 0.02, usable=False, collapsed=0.5), point(8, 0.01)]
    cal = Calibration("caa", "everyone", "lower", points, max_collapsed=0.1, max_distinct_drop=0.1)
    assert cal.collapse_onset == 4  # α 8 passes again, but lies past the onset
    # α 0.5 moved TOXICITY the wrong way; α 1.5's interval includes zero
    assert [p.alpha for p in cal.window] == [1, 2, 3]
    assert cal.recommended == 2  # 0.050 is within 90 % of the best drop (0.052), at a gentler α than 3
    assert "productive α 1, 2, 3" in cal.summary() and "collapse from α 4" in cal.summary()
    higher = Calibration("caa", "u1", "higher", cal.points, 0.1, 0.1)
    assert [p.alpha for p in higher.window] == [0.5] and higher.recommended == 0.5
    nothing = Calibration("caa", "u1", "lower", [point(0, 0.1), point(1, 0.2, usable=False)], 0.1, 0.1)
    assert nothing.window == [] and nothing.recommended is None and "no α moved" in nothing.summary()


def test_calibrate_runs_every_alpha_and_writes_json_and_plot(tiny_lm, tmp_path):
    torch.manual_seed(0)
    vector = SteeringVector({1: torch.randn(32), 2: torch.randn(32)}, "tiny", 32, 4, meta={"kind": "population"})
    method = ActivationSteering({}, alpha=1.0, default=vector)
    prompts = ["the quick brown fox", "thank you", "what is the capital of France?"]
    cal = calibrate(tiny_lm, method, prompts, [0.5, 8.0, 0.5], JigsawBiLSTMScorer(), name="caa-population",
                    max_new_tokens=6, batch_size=4)
    assert [p.alpha for p in cal.points] == [0.0, 0.5, 8.0]  # α = 0 added, duplicates dropped, sorted
    assert all(0.0 <= p.toxicity <= 1.0 and p.toxicity_ci[0] <= p.toxicity <= p.toxicity_ci[1] for p in cal.points)
    for p in cal.points[1:]:  # the paired change is the difference of the means, inside its own interval
        assert p.change == pytest.approx(p.toxicity - cal.points[0].toxicity)
        assert p.change_ci[0] - 1e-9 <= p.change <= p.change_ci[1] + 1e-9
    files = save_calibration(cal, tmp_path)
    saved = json.loads(files[0].read_text())
    assert saved["summary"] == cal.summary() and len(saved["points"]) == 3
    assert files[1].stat().st_size > 1000


def test_calibrate_refuses_bad_input(tiny_lm):
    method = ActivationSteering({}, alpha=1.0, default=None)
    with pytest.raises(ValueError, match="direction"):
        calibrate(tiny_lm, method, ["hi"], [1.0], JigsawBiLSTMScorer(), name="x", direction="sideways")
    with pytest.raises(ValueError, match="at least one prompt"):
        calibrate(tiny_lm, method, [], [1.0], JigsawBiLSTMScorer(), name="x")
