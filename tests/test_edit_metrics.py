import math

import pytest
import torch

from tests.reference_edit_metrics import edit_metrics, strongest_attribute

ATTRS = ["smile", "glasses", "male"]


def test_known_changes():
    before = torch.tensor([[0.1, 0.2, 0.9], [0.2, 0.1, 0.1], [0.8, 0.3, 0.2], [0.3, 0.9, 0.7]])
    # Samples 0, 1, 3 start without a smile; 0 and 3 gain one. Sample 3 also loses its glasses.
    after = torch.tensor([[0.7, 0.2, 0.9], [0.4, 0.1, 0.1], [0.9, 0.3, 0.2], [0.6, 0.2, 0.7]])
    m = edit_metrics(before, after, ATTRS, "smile", sign=1)
    assert m["success"] == pytest.approx(2 / 3) and m["success_count"] == 3
    assert m["preserve"] == pytest.approx(7 / 8)  # 8 (sample, other attribute) pairs, one flipped
    assert m["score_delta/smile"] == pytest.approx((0.6 + 0.2 + 0.1 + 0.3) / 4)
    assert m["score_delta/glasses"] == pytest.approx(-0.7 / 4) and m["score_abs_delta/male"] == 0
    assert strongest_attribute(before, after, ATTRS) == ("smile", 1)


def test_negative_edit_and_no_candidates():
    before = torch.tensor([[0.9, 0.5, 0.5], [0.7, 0.5, 0.5]])
    after = torch.tensor([[0.2, 0.5, 0.5], [0.6, 0.5, 0.5]])
    m = edit_metrics(before, after, ATTRS, "smile", sign=-1)
    assert m["success"] == pytest.approx(0.5) and m["preserve"] == 1.0
    assert strongest_attribute(before, after, ATTRS) == ("smile", -1)
    assert math.isnan(edit_metrics(before, after, ATTRS, "smile", sign=1)["success"])  # nobody starts without a smile
    with pytest.raises(ValueError, match="sign"):
        edit_metrics(before, after, ATTRS, "smile", sign=0)
