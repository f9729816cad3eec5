"""Directions compared at a matched effect on their target factor (hspace.tables.leaderboard)."""

import math

import pytest

from hspace.metrics.factor_effects import DATA_STD
from hspace.tables.leaderboard import direction_point, matched_point, target_effect


def test_the_matched_point_is_interpolated_between_the_strengths_around_it():
    values = {"success": [math.nan, 0.2, 0.6], "leakage": [0.0, 0.1, 0.3]}
    point = matched_point([0, 1, 2], [0.0, 0.25, 0.75], values, level=0.5)
    assert point.reached and point.strength == pytest.approx(1.5) and point.effect == 0.5
    assert point.values == pytest.approx({"success": 0.4, "leakage": 0.2})
    first = matched_point([2, 0, 4], [1.0, 0.0, 2.0], {"leakage": [0.4, 0.0, 0.8]}, level=0.5)  # any order
    assert first.strength == pytest.approx(1.0) and first.values["leakage"] == pytest.approx(0.2)


def test_a_direction_that_never_gets_there_is_reported_at_its_largest_strength():
    point = matched_point([0, 1, 2], [0.0, 0.1, 0.3], {"valid": [1.0, 0.9, 0.7]}, level=0.5)
    assert not point.reached and point.strength == 2 and point.effect == 0.3 and point.values["valid"] == 0.7
    with pytest.raises(ValueError, match="must include 0"):
        matched_point([1, 2], [0.1, 0.3], {}, level=0.5)
    exactly = matched_point([0, 1], [0.0, 0.5], {"valid": [1.0, 0.9]}, level=0.5)  # the level at the last strength
    assert exactly.reached and exactly.strength == 1 and exactly.values["valid"] == 0.9
    overshoot = matched_point([0, 1, 2], [0.0, 0.4, 0.2], {"valid": [1.0, 0.9, 0.7]}, level=0.5)
    assert not overshoot.reached and overshoot.strength == 2 and overshoot.effect == 0.2  # its own, not the best


def test_a_value_missing_at_one_end_takes_the_other_ends():
    from hspace.tables.leaderboard import interpolate

    assert interpolate(math.nan, 0.4, 0.3) == 0.4 and interpolate(0.2, math.nan, 0.3) == 0.2
    assert interpolate(0.2, 0.4, 0.5) == pytest.approx(0.3) and math.isnan(interpolate(math.nan, math.nan, 0.5))


def metrics_of(target: str, changes: dict[float, float], success: dict[float, float]) -> dict:
    key = "edit/d/factors"
    metrics = {f"{key}/target": target}
    for s in changes:
        label = f"{s:g}"
        metrics |= {f"{key}/change/r@{label}": changes[s], f"{key}/success@{label}": success[s]}
        metrics |= {f"{key}/leakage@{label}": 0.1 * s, f"{key}/valid@{label}": 1.0 - 0.1 * s}
    return metrics


def test_the_target_effect_follows_the_target_and_the_sign_of_the_strength():
    std = DATA_STD["r"]
    shrinks = metrics_of("-r", {0.0: 0.0, 1.0: -std, -1.0: std}, {0.0: math.nan, 1.0: 0.7, -1.0: 0.6})
    assert target_effect(shrinks, "d", 1.0) == pytest.approx(1.0)  # "-r": a shrinking edit is on target
    assert target_effect(shrinks, "d", -1.0) == pytest.approx(1.0)
    assert target_effect(shrinks, "d", 0.0) == 0.0
    recolours = {"edit/d/factors/target": "colour=red", "edit/d/factors/success@2": 0.8}
    assert target_effect(recolours, "d", 2.0) == 0.8  # categorical: the share brought to the value


def test_a_run_direction_point_uses_the_non_negative_strengths():
    std = DATA_STD["r"]
    grows = metrics_of(
        "r", {-1.0: -std, 0.0: 0.0, 1.0: 0.25 * std, 2.0: 0.75 * std}, {-1.0: 1, 0.0: math.nan, 1.0: 0.3, 2.0: 0.9}
    )
    point = direction_point(grows, "d", [-1.0, 0.0, 1.0, 2.0])
    assert point.reached and point.strength == pytest.approx(1.5)
    assert point.values["success"] == pytest.approx(0.6) and point.values["valid"] == pytest.approx(0.85)


def test_a_run_read_back_from_metrics_json_gives_the_same_point():
    from hspace.run_record import finite

    std = DATA_STD["r"]
    grows = metrics_of("r", {0.0: 0.0, 1.0: 0.75 * std, 2.0: std}, {0.0: math.nan, 1.0: 0.3, 2.0: 0.9})
    read_back = finite(grows)  # what a resumed leaderboard reads from metrics.json: NaN written as null
    assert read_back["edit/d/factors/success@0"] is None
    point = direction_point(read_back, "d", [0.0, 1.0, 2.0])  # between 0 (success not measured) and 1
    assert point == direction_point(grows, "d", [0.0, 1.0, 2.0]) and point.values["success"] == pytest.approx(0.2)


def test_before_the_first_strength_success_is_interpolated_from_zero():
    """An unedited sample moves nothing, so success is 0 at strength 0 (where the run leaves it undefined): a
    categorical target crossing before the first strength has success 0.5 there, as its matched effect says."""
    recolours = {"edit/d/factors/target": "colour=red"}
    for s, success in ((0.0, None), (1.0, 0.8), (2.0, 0.9)):
        recolours |= {f"edit/d/factors/success@{s:g}": success, f"edit/d/factors/leakage@{s:g}": 0.2 * s}
        recolours |= {f"edit/d/factors/valid@{s:g}": 1.0}
    point = direction_point(recolours, "d", [0.0, 1.0, 2.0])
    assert point.strength == pytest.approx(0.625) and point.effect == 0.5
    assert point.values == pytest.approx({"success": 0.5, "leakage": 0.125, "valid": 1.0})


def load_script(monkeypatch):
    import importlib.util
    import sys
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "leaderboard", Path(__file__).parents[1] / "scripts/shapes_leaderboard.py"
    )
    script = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "leaderboard", script)  # its dataclasses look their module up
    spec.loader.exec_module(script)
    return script


def test_each_baseline_has_as_many_codes_as_the_set_it_is_compared_with_and_edit_time_counts_every_direction(
    monkeypatch,
):
    """DCI and MIG of K directions are compared with K principal components of x_T: one baseline row per K. The
    edit time per image divides by every edited direction, also one without a target."""
    script = load_script(monkeypatch)
    std = DATA_STD["r"]
    metrics = metrics_of("r", {0.0: 0.0, 1.0: std}, {0.0: math.nan, 1.0: 0.9})
    metrics |= {"edit/e/factors/target": None, "edit/num_directions": 2, "edit/num_samples": 4, "time/edit_s": 1.6}
    results = {"pca": (script.Entry("pca", "pca", [], [0.0, 1.0], 2), [metrics])}
    baselines = {6: {"mig": 0.21, "dci_d": 0.18}, 3: {"mig": 0.2, "dci_d": 0.11}}
    table = script.leaderboard(results, {"pca": {"mig": 0.13}}, baselines, None)
    assert [row for row in table.rows if row[0] == "x_T PCA (baseline)"] == [
        ("x_T PCA (baseline)", "3 codes", "-"),
        ("x_T PCA (baseline)", "6 codes", "-"),
    ]
    assert table.cell(("x_T PCA (baseline)", "3 codes", "-"), "dci_d").mean == 0.11
    assert table.cell(("pca", "d", "r"), "edit_ms").mean == pytest.approx(1000 * 1.6 / (2 * 4 * 2))


def test_the_leaderboard_script_resumes_a_run_only_with_the_same_settings(tmp_path, monkeypatch, capsys):
    """scripts/shapes_leaderboard.py keeps a finished run whose config is this one's, and runs again one with
    other settings (a --quick run, other --steps) or one left unfinished."""
    import json
    from argparse import Namespace
    from pathlib import Path

    from omegaconf import OmegaConf

    import hspace.cli.run

    script = load_script(monkeypatch)
    ran = []

    def fake_run(cfg):  # what hspace-run leaves behind, without running a model
        ran.append(cfg.sampler.num_steps)
        (Path(cfg.run_dir) / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        (Path(cfg.run_dir) / "metrics.json").write_text(json.dumps({"steps": cfg.sampler.num_steps}))
        (Path(cfg.run_dir) / "run_info.json").write_text(json.dumps({"status": "completed"}))
        return {"steps": cfg.sampler.num_steps}

    monkeypatch.setattr(hspace.cli.run, "run", fake_run)
    entry = script.Entry("pca", "pca", [], [-1.0, 0.0, 1.0], 2)
    run_dir = tmp_path / "pca" / "0"
    run_dir.mkdir(parents=True)

    def once(steps, pairs="valid"):
        return script.run_one(
            entry, 0, run_dir, tmp_path / "cache", {}, Namespace(steps=steps, samples=4, factor_pairs=pairs)
        )

    assert once(5) == {"steps": 5} and once(5) == {"steps": 5} and ran == [5]  # the second call resumed
    assert once(7) == {"steps": 7} and ran == [5, 7]  # other settings: run again, with a note
    assert f"running {run_dir} again" in capsys.readouterr().err
    (run_dir / "run_info.json").write_text(json.dumps({"status": "running"}))  # killed
    assert once(7) == {"steps": 7} and ran == [5, 7, 7]
    assert once(7, "object") == {"steps": 7} and ran == [5, 7, 7, 7]  # factor scores over other pairs: again


def test_each_methods_best_direction_reaches_the_effect_on_every_seed_with_the_least_leakage():
    from hspace.tables.build import Cell, Table
    from hspace.tables.leaderboard import best_per_method

    def row(method, direction, reached, leakage, success):
        return (method, direction, "r"), {
            "reached": Cell(reached),
            "leakage": Cell([leakage] * len(reached)),
            "success": Cell([success] * len(reached)),
            "strength": Cell([1.0] * len(reached)),
            "valid": Cell([0.9] * len(reached)),
        }

    rows = [
        row("pca", "pc0", [1, 1, 1], 0.6, 0.4),
        row("pca", "pc1", [1, 1, 0], 0.2, 0.4),  # least leakage, but not reached on every seed
        row("pca", "pc2", [1, 1, 1], 0.5, 0.3),  # the best: reached everywhere, least leakage among those
        row("boundary", "large", [1, 1, 1], 0.5, 0.3),
        row("boundary", "red", [1, 1, 1], 0.5, 0.6),  # a tie on leakage: the higher success wins
        row("random", "random0", [0, 0, 0], 0.1, 0.1),  # never reached: no row for random
        row("class_mean", "large", [1, 1, 1], 0.4, 0.5),
        row("class_mean", "red", [1, 1, 1], 0.4, 0.5),  # a tie on both: the first keeps its place
    ]
    baseline = ("x_T PCA (baseline)", "-", "-")
    table = Table(
        ["method", "direction", "target"],
        [label for label, _ in rows] + [baseline],
        ["strength", "reached", "success", "leakage", "valid"],
        {(label, column): cell for label, cells in rows for column, cell in cells.items()},
    )
    best = best_per_method(table)
    assert [r[:2] for r in best.rows] == [("pca", "pc2"), ("boundary", "red"), ("class_mean", "large")]
    assert best.columns == ["strength", "success", "leakage", "valid"]
    assert best.cell(best.rows[1], "success").mean == 0.6 and best.cell(best.rows[0], "valid").mean == 0.9


def test_a_strength_with_no_measured_effect_is_passed_over_not_read_as_no_effect():
    """No pair at strength 2 (NaN): the crossing is interpolated between the measured strengths 1 and 3, not
    from a zero at 2 that was never measured; where the effect never reaches the level, the point is the largest
    measured strength with its values."""
    nan = math.nan
    point = matched_point([0, 1, 2, 3], [0.0, 0.3, nan, 0.9], {"leakage": [0.0, 0.3, nan, 0.9]}, level=0.5)
    assert (
        point.reached and point.strength == pytest.approx(1 + 2 / 3) and point.values["leakage"] == pytest.approx(0.5)
    )
    short = matched_point([0, 1, 2], [0.0, 0.2, nan], {"leakage": [0.0, 0.1, nan]}, level=0.5)
    assert not short.reached and short.strength == 1 and short.effect == 0.2 and short.values["leakage"] == 0.1
