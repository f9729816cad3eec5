"""hspace-table from fixture run directories: two methods x two seeds."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from hspace.cli import CONFIG_DIR
from hspace.cli.table import make_table
from hspace.tables.build import automatic_groups, build_table, to_markdown
from hspace.tables.collect import RunRecord, local_runs, wandb_runs
from hspace.tables.plot import strength_curves

RUNS = {  # (method, first_seed) -> metrics
    ("pca", 0): {
        "method": "pca",
        "edit/pc0/success": 0.8,
        "edit/pc0/preserve": 0.9,
        "edit/pc0/success@2": 0.5,
        "edit/pc0/success@4": 0.8,
        "edit/score_delta/pc0/large": 0.30,
        "edit/score_delta/pc0/red": 0.02,
        "edit/pc0/target": "large",
    },
    ("pca", 8): {
        "method": "pca",
        "edit/pc0/success": 0.6,
        "edit/pc0/preserve": 0.7,
        "edit/pc0/success@2": 0.3,
        "edit/pc0/success@4": 0.6,
        "edit/score_delta/pc0/large": 0.10,
        "edit/score_delta/pc0/red": 0.04,
        "edit/pc0/target": "large",
    },
    ("random", 0): {
        "method": "random",
        "edit/random0/success": 0.1,
        "edit/random0/preserve": 1.0,
        "edit/random0/success@2": 0.0,
        "edit/random0/success@4": 0.1,
        "edit/score_delta/random0/large": 0.0,
        "edit/score_delta/random0/red": 0.0,
    },
    ("random", 8): {
        "method": "random",
        "edit/random0/success": 0.3,
        "edit/random0/preserve": 1.0,
        "edit/random0/success@2": 0.2,
        "edit/random0/success@4": 0.3,
        "edit/score_delta/random0/large": 0.02,
        "edit/score_delta/random0/red": float("nan"),
    },
}

EXPECTED_SUMMARY = """\
| method | direction | success | preserve |
|---|---|---|---|
| pca | pc0 | 0.70 ± 0.14 | 0.80 ± 0.14 |
| random | random0 | 0.20 ± 0.14 | 1.00 ± 0.00 |
"""

EXPECTED_SCORE_DELTA = """\
| method | edit | large | red |
|---|---|---|---|
| pca | pc0 | 0.20 ± 0.14 | 0.03 ± 0.01 |
| random | random0 | 0.01 ± 0.01 | 0.00 (1 of 2) |
"""


@pytest.fixture
def runs_dir(tmp_path):
    for i, ((method, seed), metrics) in enumerate(RUNS.items()):
        run = tmp_path / "runs" / str(i)
        run.mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps(metrics))
        (run / "config.yaml").write_text(f"method:\n  _target_: hspace.directions.{method}\nfirst_seed: {seed}\n")
    (tmp_path / "runs" / "not_a_run").mkdir()
    return tmp_path / "runs"


def compose_table(runs_dir, out, extra=()):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="table", overrides=[f"runs=[{runs_dir}]", f"output_dir={out}", "digits=2", *extra])


def test_summary_and_score_delta_markdown(runs_dir, tmp_path):
    written = make_table(compose_table(runs_dir, tmp_path / "out"))
    assert written[".md"].read_text() == EXPECTED_SUMMARY
    assert "0.70 $\\pm$ 0.14" in written[".tex"].read_text() and "\\toprule" in written[".tex"].read_text()
    assert (
        written[".csv"].read_text().splitlines()[0]
        == "method,direction,success_mean,success_std,success_n,preserve_mean,preserve_std,preserve_n"
    )
    assert written[".png"].stat().st_size > 1000
    written = make_table(compose_table(runs_dir, tmp_path / "out2", ["layout=score_delta", "plot.metric=null"]))
    assert written[".md"].read_text() == EXPECTED_SCORE_DELTA and ".png" not in written


def test_curves_against_strength(runs_dir):
    curves = strength_curves(local_runs([runs_dir]), "success", ["method"])
    assert curves["pca"][2.0] == pytest.approx((0.4, 0.1414, 2, 2), abs=1e-3) and sorted(curves["random"]) == [2.0, 4.0]
    assert not any(point.partial for points in curves.values() for point in points.values())


def test_a_curve_point_over_some_values_says_how_many(tmp_path):
    """Nulls do not enter a point's mean, and the point counts what it rests on: here one run measured both
    directions at +4, the other only d0 (d1 null), and a third run of the group measured nothing at all."""
    runs = [
        RunRecord("a", {"method": "pca"}, {"edit/d0/success@4": 0.2, "edit/d1/success@4": 0.6}),
        RunRecord(
            "b", {"method": "pca"}, {"edit/d0/success@4": 0.4, "edit/d1/success@4": None, "edit/d0/success@2": 0.1}
        ),
        RunRecord("c", {"method": "pca"}, {"edit/d0/success@4": None, "edit/d1/success@4": float("nan")}),
    ]
    curves = strength_curves(runs, "success", ["method"])["pca"]
    assert curves[4.0] == pytest.approx((0.4, 0.0, 3, 6))  # runs a (0.4) and b (0.4); 3 of 6 values
    assert curves[2.0] == pytest.approx((0.1, 0.0, 1, 6)) and curves[4.0].partial
    from hspace.tables.plot import plot_curves

    assert plot_curves({"pca": curves}, "success", tmp_path / "curve.png").stat().st_size > 1000


def test_rows_can_group_by_config_values(runs_dir):
    table = build_table(local_runs([runs_dir]), r"^edit/(?P<row>[^/@]+)/(?P<column>success)$", ["first_seed"])
    assert to_markdown(table, 1).splitlines()[2:] == [
        "| 0 | pc0 | 0.8 |",
        "| 8 | pc0 | 0.6 |",
        "| 0 | random0 | 0.1 |",
        "| 8 | random0 | 0.3 |",
    ]


def test_one_name_stands_for_a_list_of_one(runs_dir, tmp_path):
    listed = make_table(compose_table(runs_dir, tmp_path / "a", ["group_by=[method]", "plot.directions=[pc0]"]))
    named = make_table(compose_table(runs_dir, tmp_path / "b", ["group_by=method", "plot.directions=pc0"]))
    assert named[".md"].read_text() == listed[".md"].read_text() == EXPECTED_SUMMARY
    assert named[".png"].read_bytes() == listed[".png"].read_bytes()


def test_strength_rows_are_in_numeric_order(tmp_path):
    strengths = ["-10", "-4", "0", "10", "4"]  # the order of metrics.json's sorted keys
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({f"edit/d/success@{s}": float(s) for s in strengths}))
    (run / "config.yaml").write_text("method:\n  _target_: hspace.directions.boundary\n")
    table = build_table(
        local_runs([tmp_path]), r"^edit/d/(?P<column>success)@(?P<row>-?[0-9.]+)$", ["method"], "strength"
    )
    assert [row[-1] for row in table.rows] == ["-10", "-4", "0", "4", "10"]


def test_a_cell_that_some_runs_did_not_measure_says_how_many_did(tmp_path):
    """A run whose value is null (e.g. success with no sample on the wrong side) is left out of the mean, and the
    cell says so: 0.600 (1 of 2), not a 0.600 that reads as the mean of both."""
    for seed, success in ((0, 0.6), (1, None)):
        run = tmp_path / f"run{seed}"
        run.mkdir()
        (run / "metrics.json").write_text(json.dumps({"edit/d/success@1": success, "edit/d/mse@1": 0.1 * (seed + 1)}))
        (run / "config.yaml").write_text(f"first_seed: {seed}\n")
    # A third run that measured mse but wrote no success at all counts among the row's runs too.
    run = tmp_path / "run2"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"edit/d/mse@1": 0.3}))
    (run / "config.yaml").write_text("first_seed: 2\n")
    table = build_table(local_runs([tmp_path]), r"^edit/d/(?P<column>success|mse)@(?P<row>1)$", [], "strength")
    assert table.cell(("1",), "success").text(3) == "0.600 (1 of 3)"
    assert table.cell(("1",), "mse").text(3) == "0.200 ± 0.100"
    # a run whose only value in the row is null still counts among its runs
    alone = build_table(local_runs([tmp_path]), r"^edit/d/(?P<column>success)@(?P<row>1)$", [], "strength")
    assert alone.cell(("1",), "success").text(3) == "0.600 (1 of 2)"


def test_runs_along_different_directions_files_are_not_averaged(tmp_path):
    """Runs given other directions files (directions_path) have the same method settings in their config: the
    file's content hash keeps them apart."""
    from hspace.errors import UserError

    for seed, file in ((0, "a1b2"), (1, "c3d4")):
        run = tmp_path / f"run{seed}"
        run.mkdir()
        (run / "metrics.json").write_text(json.dumps({"edit/d/success@1": 0.5, "directions/file_sha256": file}))
        (run / "config.yaml").write_text(f"first_seed: {seed}\n")
    pattern = r"^edit/d/(?P<column>success)@(?P<row>1)$"
    with pytest.raises(UserError, match="edited along 2 different directions"):
        build_table(local_runs([tmp_path]), pattern, [], "strength")
    apart = build_table(local_runs([tmp_path]), pattern, ["directions/file_sha256"], "strength")
    assert [row[0] for row in apart.rows] == ["a1b2", "c3d4"]
    assert automatic_groups(local_runs([tmp_path])) == ["directions/file_sha256"]  # group_by=auto keeps them apart


def test_wandb_runs_through_the_api():
    """A W&B run's config holds what a local run's config.yaml holds (flat), and beside it the chosen options
    (choice/<group>) and W&B's own keys, which are left out: a run compares alike from either source."""

    class FakeRun:
        id, summary = "abc", {"method": "pca", "edit/pc0/success": 0.5, "_step": 0}
        config = {"first_seed": 0, "method.num_samples": 64, "choice/method": "pca", "_wandb": {"cli_version": "0"}}

    class FakeApi:
        def runs(self, path, filters):
            assert path == "me/hspace" and filters == {"state": "finished", "jobType": "run"}
            return [FakeRun()]

    (record,) = wandb_runs("me/hspace", api=FakeApi())
    assert record.metrics == {"method": "pca", "edit/pc0/success": 0.5} and record.value("first_seed") == 0
    assert record.config == {"first_seed": 0, "method.num_samples": 64}


def test_a_table_of_wandb_runs_alone(tmp_path, monkeypatch):
    """wandb=<project> takes the project's runs alone, also where the default folders hold local runs (the local
    copies of synced runs would count twice); a project without finished runs is one line."""
    import hspace.tables.collect

    records = [
        RunRecord(f"wandb:me/hspace/{i}", {"first_seed": seed}, metrics)
        for i, ((method, seed), metrics) in enumerate(RUNS.items())
    ]
    monkeypatch.setattr(hspace.tables.collect, "wandb_runs", lambda path: list(records) if path == "me/hspace" else [])
    monkeypatch.chdir(tmp_path)
    local = tmp_path / "outputs" / "run"  # a local run in a default folder, not taken beside the project's
    local.mkdir(parents=True)
    (local / "metrics.json").write_text(json.dumps(RUNS[("pca", 0)]))
    (local / "config.yaml").write_text("method:\n  _target_: hspace.directions.pca\nfirst_seed: 0\n")
    for runs in ([], ["runs=[]"]):
        written = make_table(
            compose_table_without_runs(tmp_path / "out", [*runs, "wandb=me/hspace", "plot.metric=null"])
        )
        assert written[".md"].read_text() == EXPECTED_SUMMARY
    with pytest.raises(SystemExit):
        make_table(compose_table_without_runs(tmp_path / "out2", ["wandb=me/empty", "plot.metric=null"]))
    assert not (tmp_path / "out2").exists()


def compose_table_without_runs(out, extra):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="table", overrides=[f"output_dir={out}", "digits=2", *extra])


def test_bad_input_is_one_line(tmp_path, runs_dir):
    command = [str(Path(sys.executable).parent / "hspace-table")]
    missing = subprocess.run(
        [*command, f"runs=[{tmp_path / 'nothing'}]", f"hydra.run.dir={tmp_path / 'o'}"], capture_output=True, text=True
    )
    assert (
        missing.returncode == 2
        and missing.stderr.strip().startswith("error: no runs at")
        and missing.stderr.strip().count("\n") == 0
    )
    assert not (tmp_path / "o").exists()  # a refused table leaves no folder (no .hydra/, no log file)
    nomatch = subprocess.run(
        [
            *command,
            f"runs=[{runs_dir}]",
            "layout.pattern='^nothing/(?P<row>x)(?P<column>y)$'",
            f"hydra.run.dir={tmp_path / 'o'}",
        ],
        capture_output=True,
        text=True,
    )
    assert nomatch.returncode == 2 and "matches the table pattern" in nomatch.stderr
    typo = subprocess.run(  # a folder the user names must exist, even beside one that does
        [*command, f"runs=[{runs_dir},{tmp_path / 'nothing'}]", f"hydra.run.dir={tmp_path / 'o'}"],
        capture_output=True,
        text=True,
    )
    assert typo.returncode == 2 and typo.stderr.strip() == (
        f"error: no runs at {tmp_path / 'nothing'}: give run directories or folders that contain them (each with "
        "metrics.json and config.yaml)"
    )
    assert RunRecord("x", {"a": {"b": 1}}, {}).value("a.b") == 1


def test_runs_with_other_settings_are_kept_apart_or_refused(tmp_path, capsys):
    for i, strengths in enumerate(["[-2, 0, 2]", "[-4, 0, 4]"]):
        run = tmp_path / "runs" / str(i)
        run.mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps({"method": "pca", "edit/pc0/success": 0.5 + 0.1 * i}))
        config = f"method:\n  _target_: pca\nedit:\n  strengths: {strengths}\nfirst_seed: {i}\n"
        (run / "config.yaml").write_text(config)
    auto = make_table(compose_table(tmp_path / "runs", tmp_path / "out", ["plot.metric=null"]))
    rows = auto[".md"].read_text().splitlines()
    assert rows[0].startswith("| edit.strengths | direction |") and len(rows) == 4  # one row per setting
    with pytest.raises(SystemExit):
        make_table(compose_table(tmp_path / "runs", tmp_path / "out2", ["plot.metric=null", "group_by=[method]"]))
    err = capsys.readouterr().err
    assert "would be averaged" in err and "differ in edit.strengths" in err and "group_by=auto" in err


def test_auto_groups_keep_apart_the_settings_of_one_method_beside_another_method(tmp_path):
    """PCA with 5 and with 10 components beside random directions, two seeds each: the rows are the method and
    the component count, and each cell averages the two seeds of one setting."""
    for i, (method, components, seed) in enumerate(
        [("pca", 5, 0), ("pca", 5, 1), ("pca", 10, 0), ("pca", 10, 1), ("random", None, 0), ("random", None, 1)]
    ):
        run = tmp_path / "runs" / str(i)
        run.mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps({"method": method, "edit/d0/success": 0.1 * i}))
        settings = f"\n  num_components: {components}" if components else ""
        (run / "config.yaml").write_text(f"method:\n  _target_: {method}{settings}\nfirst_seed: {seed}\n")
    runs = local_runs([tmp_path / "runs"])
    assert automatic_groups(runs) == ["method", "method.num_components"]
    table = make_table(compose_table(tmp_path / "runs", tmp_path / "out", ["plot.metric=null"]))
    rows = table[".md"].read_text().splitlines()[2:]
    assert [row.split(" | ")[:2] for row in rows] == [["| pca", "5"], ["| pca", "10"], ["| random", "None"]], rows


def test_per_direction_values_are_read_by_name_or_found():
    from hspace.metrics.keys import direction_values

    metrics = {
        "edit/pc1/factors/target": "cx",
        "edit/pc0/factors/target": "r",
        "edit/pc0/target": "large",
        "edit/score_delta/pc0/red": 0.1,  # a per-attribute table, not a direction
        "edit/pc0/factors/target@4": "no",
    }
    assert direction_values(metrics, "factors/target") == {"pc1": "cx", "pc0": "r"}
    assert direction_values(metrics, "factors/target", ["pc0", "pc9"]) == {"pc0": "r"}
    assert direction_values(metrics, "target") == {"pc0": "large"}


def test_labels_are_escaped_for_latex_and_markdown():
    """A row label may be a path or hold LaTeX's or Markdown's markup: each character prints as itself."""
    from hspace.tables.build import Cell, Table, latex_escape, to_latex

    assert latex_escape(r"~/w/a_b^2 {x} 50% \ #1 $&") == (
        r"\textasciitilde{}/w/a\_b\textasciicircum{}2 \{x\} 50\% \textbackslash{} \#1 \$\&"
    )
    table = Table(["model.weights", "row"], [("~/w/a|b.pt", "pc0")], ["success"], {})
    table.cells[(("~/w/a|b.pt", "pc0"), "success")] = Cell([0.5], 1)
    assert "| ~/w/a\\|b.pt | pc0 | 0.500 |" in to_markdown(table)
    assert r"\textasciitilde{}/w/a|b.pt & pc0 & 0.500 \\" in to_latex(table)


def test_one_column_may_be_given_as_a_name(runs_dir, tmp_path):
    written = make_table(compose_table(runs_dir, tmp_path / "out", ["plot.metric=null", "layout.columns=success"]))
    assert written[".md"].read_text().splitlines()[0] == "| method | direction | success |"


def test_auto_groups_name_a_section_by_its_settings_once(tmp_path):
    """A run without a classifier (metrics.classifier null) beside one with one: the rows are told apart by the
    classifier's settings, not by those and the section as a whole again."""
    for i, classifier in enumerate(["null", "\n    _target_: cnn\n    source: shapes_attributes"]):
        run = tmp_path / "runs" / str(i)
        run.mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps({"method": "pca", "edit/d0/success": 0.1 * i}))
        (run / "config.yaml").write_text(f"method:\n  _target_: pca\nmetrics:\n  classifier: {classifier}\n")
    assert automatic_groups(local_runs([tmp_path / "runs"])) == [
        "metrics.classifier._target_",
        "metrics.classifier.source",
    ]


def test_a_plot_of_long_row_labels_keeps_its_legend_beside_the_axes_without_a_warning(tmp_path):
    import warnings

    from PIL import Image

    from hspace.tables.plot import CurvePoint, plot_curves

    label = " ".join(["metrics.classifier._target_ hspace.classifiers.cnn.AttributeCNN"] * 4)
    curves = {label: {0.0: CurvePoint(0.1, 0.0, 1, 1), 2.0: CurvePoint(0.5, 0.1, 1, 1)}, "short": {}}
    curves["short"] = {0.0: CurvePoint(0.2, 0.0, 1, 1), 2.0: CurvePoint(0.3, 0.0, 1, 1)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = plot_curves(curves, "success", tmp_path / "plot.png")
    width, height = Image.open(path).size
    assert width > 5 * 120  # grown to hold the legend beside the 5-inch figure


def test_a_plot_of_a_metric_with_a_slash_is_one_file_in_the_output_folder(tmp_path):
    """plot.metric=factors/leakage is drawn to <output>/factors_leakage_vs_strength.png, not into a subfolder."""
    for seed in (0, 8):
        run = tmp_path / "runs" / str(seed)
        run.mkdir(parents=True)
        metrics = {"method": "pca", "edit/pc0/success": 0.5, "edit/pc0/preserve": 0.9}
        metrics |= {"edit/pc0/factors/leakage@2": 0.1 + seed / 100, "edit/pc0/factors/leakage@4": 0.3}
        (run / "metrics.json").write_text(json.dumps(metrics))
        (run / "config.yaml").write_text(f"method:\n  _target_: hspace.directions.pca\nfirst_seed: {seed}\n")
    written = make_table(compose_table(tmp_path / "runs", tmp_path / "out", ["plot.metric=factors/leakage"]))
    assert written[".png"] == tmp_path / "out" / "factors_leakage_vs_strength.png" and written[".png"].is_file()


def test_settings_written_as_integers_or_floats_compare_alike(tmp_path):
    """edit.strengths=[-4,4] and [-4.0,4.0] compute alike: the runs are averaged, not split into two rows or refused
    (and a rerun under skip_done takes either as the same settings)."""
    from hspace.tables.build import differing_settings, setting_text

    assert setting_text([-4, 0.5, 4.0]) == setting_text([-4.0, 0.5, 4]) == "[-4, 0.5, 4]"
    assert setting_text(["a", 1.0]) == "['a', 1]" and setting_text(True) == "True" and setting_text(0.25) == "0.25"
    runs = [
        RunRecord(str(i), {"edit": {"strengths": strengths}, "first_seed": i}, {"method": "pca", "edit/pc0/success": v})
        for i, (strengths, v) in enumerate((([-4, 4], 0.2), ([-4.0, 4.0], 0.4)))
    ]
    assert differing_settings(runs) == [] and automatic_groups(runs) == []
    table = build_table(runs, r"edit/(?P<row>[^/]+)/(?P<column>success)$", ["edit.strengths"])
    assert table.rows == [("[-4, 4]", "pc0")] and table.cell(table.rows[0], "success").values == [0.2, 0.4]


def test_skip_done_takes_a_run_whose_strengths_were_written_as_floats_as_the_same_settings(tmp_path):
    from omegaconf import OmegaConf

    from hspace.cli.run import made_with

    (tmp_path / "config.yaml").write_text("edit:\n  strengths: [-4.0, 0.0, 4.0]\nrun_dir: elsewhere\n")
    assert made_with(tmp_path, OmegaConf.create({"edit": {"strengths": [-4, 0, 4]}, "run_dir": str(tmp_path)}))
    assert not made_with(tmp_path, OmegaConf.create({"edit": {"strengths": [-4, 0, 2]}, "run_dir": str(tmp_path)}))


def test_a_cell_averaging_runs_of_different_targets_is_marked(tmp_path):
    """Each run guesses a direction's target from its own samples, so two seeds may score success against
    different attributes: the cell still averages them (the success on what the direction moves most), marked,
    with a note saying how to score one target; a cell whose runs agree, or a metric without a target, is not."""
    from hspace.tables.build import MIXED_TARGETS_NOTE, to_latex

    runs = [
        RunRecord(
            str(seed),
            {"first_seed": seed},
            {
                "method": "pca",
                "edit/pc0/success": v,
                "edit/pc0/mse": 0.1,
                "edit/pc0/target": target,
                "edit/pc1/success": 0.5,
                "edit/pc1/target": "top",
            },
        )  # fmt: skip
        for seed, v, target in ((0, 0.2, "large"), (8, 0.4, "square"))
    ]
    table = build_table(runs, r"edit/(?P<row>[^/]+)/(?P<column>success|mse)$", ["method"], "direction")
    assert table.cell(("pca", "pc0"), "success").targets == ["large", "square"]
    assert table.cell(("pca", "pc0"), "success").text(2) == "0.30 ± 0.14 *"
    assert table.cell(("pca", "pc0"), "mse").text(2) == "0.10 ± 0.00"  # no target: nothing to differ in
    assert table.cell(("pca", "pc1"), "success").text(2) == "0.50 ± 0.00"
    markdown = to_markdown(table, 2)
    assert "| pca | pc0 | 0.30 ± 0.14 * |" in markdown and markdown.endswith("\\" + MIXED_TARGETS_NOTE + "\n")
    assert "metrics.targets and metrics.factor\\_targets fix one" in to_latex(table, 2)
    agreeing = build_table(runs[:1] * 2, r"edit/(?P<row>[^/]+)/(?P<column>success)$", ["method"], "direction")
    assert not agreeing.mixed_targets and "*" not in to_markdown(agreeing, 2)
