"""Per-edit metric names are written and read by one module (hspace.metrics.keys)."""

import pytest

from hspace.metrics.keys import (
    REAL_PREFIX,
    EditKey,
    edit_key,
    parse_edit_key,
    per_strength,
    strength_label,
    with_headline,
)


@pytest.mark.parametrize(
    ("strength", "label"), [(4.0, "4"), (-4, "-4"), (0.0, "0"), (-0.25, "-0.25"), (1e-5, "1e-05"), (2.5, "2.5")]
)
def test_a_written_strength_reads_back_as_the_same_number(strength, label):
    assert strength_label(strength) == label
    name = edit_key("pc0", "factors", "change", "r", strength=strength)
    assert name == f"edit/pc0/factors/change/r@{label}"
    assert parse_edit_key(name) == EditKey("pc0", "factors/change/r", float(strength))


def test_names_without_a_strength_or_under_another_prefix():
    assert parse_edit_key("edit/pc0/target") == EditKey("pc0", "target", None)
    assert parse_edit_key(edit_key("pc0", "success", strength=2, prefix=REAL_PREFIX), REAL_PREFIX) == EditKey(
        "pc0", "success", 2.0
    )
    assert parse_edit_key("edit_real/pc0/success@2") is None  # another prefix
    for name in ("edit/headline_strength", "edit/num_samples", "fid/clean", "edit/pc0/success@high", "edit//x"):
        assert parse_edit_key(name) is None, name


def test_the_headline_strength_is_copied_without_its_suffix_and_nothing_else_is():
    metrics = {
        "edit/pc0/success@4": 0.9,
        "edit/pc0/success@-4": 0.1,
        "edit/pc0/success@14": 0.5,
        "edit/score_delta/pc0/red@4": 0.2,
        "edit/pc0/target": "red",
    }
    headline = with_headline(metrics, 4.0)
    assert headline["edit/pc0/success"] == 0.9 and headline["edit/score_delta/pc0/red"] == 0.2
    assert set(headline) - set(metrics) == {"edit/pc0/success", "edit/score_delta/pc0/red"}
    assert metrics == {k: headline[k] for k in metrics}  # the per-strength values are kept


def test_per_strength_values_are_grouped_by_direction():
    metrics = {
        "edit/pc0/success@-2": 0.3,
        "edit/pc0/success@2": 0.7,
        "edit/pc0/success": 0.7,
        "edit/pc1/success@2": 0.5,
        "edit/pc1/factors/success@2": 0.1,
        "edit/score_delta/pc0/success@2": 9.0,  # another metric: pc0/success of "score_delta"
    }
    assert per_strength(metrics, "success") == {"pc0": {-2.0: 0.3, 2.0: 0.7}, "pc1": {2.0: 0.5}}
    assert per_strength(metrics, "factors/success") == {"pc1": {2.0: 0.1}}
