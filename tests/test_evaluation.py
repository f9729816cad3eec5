"""The evaluation test loop: streaming edit scores equal the dense definitions; hand-made edits of
Shapes scenes with known attribute changes give the known answers."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from hspace.classifiers.cnn import AttributeCNN
from hspace.data.shapes import ATTRIBUTES, draw_factors, render
from hspace.metrics.edit_scores import EditScores, preserve, success
from hspace.metrics.evaluation import EvaluationSettings, evaluate_edits, headline_index
from hspace.metrics.fid import classifier_backend, reference_statistics
from hspace.metrics.locality import LocalityRegion
from tests.reference_edit_metrics import edit_metrics


def test_streaming_scores_equal_dense_definitions():
    g = torch.Generator().manual_seed(0)
    n, d, s, attributes = 40, 2, 3, ["a", "b", "c", "d"]
    before = torch.rand(n, len(attributes), generator=g)
    after = torch.rand(n, d, s, len(attributes), generator=g)
    mse, ssim = torch.rand(n, d, s, generator=g), torch.rand(n, d, s, generator=g)
    scores = EditScores(d, s, attributes)
    for rows in torch.arange(n).split(7):  # several batches
        scores.update(before[rows], after[rows], mse[rows], ssim[rows])
    totals = scores.compute()
    delta = totals["score_delta"]
    torch.testing.assert_close(totals["mse"], mse.double().mean(0))
    torch.testing.assert_close(totals["ssim"], ssim.double().mean(0))
    for j in range(d):
        for k in range(s):
            for t, target in enumerate(attributes):
                for sign in (1, -1):
                    dense = edit_metrics(before, after[:, j, k], attributes, target, sign)
                    assert success(totals, j, k, t, sign) == pytest.approx(dense["success"])
                    assert preserve(totals, j, k, t) == pytest.approx(dense["preserve"])
            assert delta[j, k].tolist() == pytest.approx([dense[f"score_delta/{a}"] for a in attributes], abs=1e-6)
            absolute = [dense[f"score_abs_delta/{a}"] for a in attributes]
            assert totals["score_abs_delta"][j, k].tolist() == pytest.approx(absolute, abs=1e-6)


def test_a_probability_at_the_threshold_counts_as_above_it():
    """p >= 0.5 is the attribute's side: a sample moved from 0.4 to exactly 0.5 has crossed it, one moved from
    exactly 0.5 to 0.4 has crossed back, and one at 0.5 both times has kept its decision."""
    before = torch.tensor([[0.4, 0.5], [0.5, 0.5]])
    after = torch.tensor([[0.5, 0.5], [0.4, 0.5]])[:, None, None].expand(2, 1, 2, 2)  # (N, D, S, A), 2 strengths
    scores = EditScores(1, 2, ["a", "b"])
    scores.update(before, after, torch.zeros(2, 1, 2), torch.zeros(2, 1, 2))
    totals = scores.compute()
    assert success(totals, 0, 0, 0, 1) == 1.0 and success(totals, 0, 0, 0, -1) == 1.0
    assert preserve(totals, 0, 0, 0) == 1.0  # "b" stayed at 0.5: above before and after
    for sign in (1, -1):
        assert success(totals, 0, 0, 0, sign) == edit_metrics(before, after[:, 0, 0], ["a", "b"], "a", sign)["success"]


def test_headline_strength():
    assert headline_index([-4, -2, 0, 2, 4]) == 4
    assert headline_index([-3, -1]) == 0


def scene_pairs(n, change):
    """uint8 originals (n, 3, 32, 32) and one edit per sample (1, n, 1, 3, 32, 32) with `change` applied to
    the factors."""
    originals, edits = [], []
    for i in range(n):
        factors = draw_factors(3, "test", i, 32)
        originals.append(render(factors, 32))
        edits.append(render(change(factors), 32))

    def to_tensor(images):
        return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()

    return to_tensor(originals), to_tensor(edits)[None, :, None]


def test_known_edits_give_known_answers():
    classifier = AttributeCNN.load("shapes_attributes")
    backend = classifier_backend(classifier, "shapes_classifier")
    originals, to_light = scene_pairs(48, lambda f: replace(f, background="light"))
    _, to_red = scene_pairs(48, lambda f: replace(f, colour="red"))
    _, unchanged = scene_pairs(48, lambda f: f)
    edits = torch.cat([to_light, to_red, unchanged])  # 3 directions x 48 samples x 1 strength
    reference = reference_statistics(backend, [originals.float() / 127.5 - 1])
    settings = EvaluationSettings(
        classifier=classifier, fid_backend=backend, reference=reference, targets={"to_red": "red"}, batch_size=16
    )
    module = evaluate_edits(settings, originals, edits, ["to_light", "to_red", "same"], [2.0])
    m = module.results
    # Unsupervised target: the attribute moved most; the intended one here.
    assert m["edit/to_light/target"] == "light_background" and m["edit/to_red/target"] == "red"
    assert m["edit/to_light/success"] == 1.0 and m["edit/to_red/success"] >= 0.95
    assert m["edit/to_light/preserve"] >= 0.99
    # Recolouring to red turns off the old colour: one decision of the 10 others flips per non-red sample.
    not_red = sum(draw_factors(3, "test", i, 32).colour != "red" for i in range(48))
    assert m["edit/to_red/preserve"] == pytest.approx(1 - not_red / (48 * 10), abs=0.01)
    dark = sum(draw_factors(3, "test", i, 32).background == "dark" for i in range(48))
    assert m["edit/score_abs_delta/to_light/light_background"] == pytest.approx(dark / 48, abs=0.02)
    assert (
        m["edit/score_delta/to_light/light_background"] == pytest.approx(dark / 48, abs=0.02)
        and abs(m["edit/score_delta/to_light/large"]) < 0.02
    )
    assert m["edit/same/mse"] == 0 and m["edit/same/ssim"] > 0.999
    assert m["edit/to_light/mse"] > 0.05 and m["edit/to_light/ssim"] < 0.9
    assert m["edit/same/fid/shapes_classifier"] < 1e-3 < m["edit/to_light/fid/shapes_classifier"]
    assert m["edit/fid/shapes_classifier/num_samples"] == 48 and m["fid/shapes_classifier/num_samples"] == 48
    # An edit that moves no attribute's mean probability by a hundredth has no target: no success, and every
    # attribute counts in its preservation.
    assert m["edit/same/target"] is None and math.isnan(m["edit/same/success"]) and m["edit/same/preserve"] == 1.0
    # Told that a direction has no target (the generated samples found none), the real images' scoring takes none.
    told = evaluate_edits(replace(settings, targets={"to_light": None}), originals, to_light, ["to_light"], [2.0])
    assert told.results["edit/to_light/target"] is None and math.isnan(told.results["edit/to_light/success"])
    # The same images made at a negative headline strength: the direction itself lowers the attribute.
    negative = evaluate_edits(replace(settings, fid_backend=None), originals, to_light, ["to_light"], [-2.0])
    assert negative.results["edit/to_light/target"] == "-light_background"
    columns, rows = module.score_matrix()
    assert columns == ["direction", *ATTRIBUTES] and rows[0][0] == "to_light" and len(rows) == 3
    # One direction at one strength: the same numbers (torchmetrics returns one-element results as scalars).
    settings.fid_backend = None
    alone = evaluate_edits(settings, originals, to_light, ["to_light"], [2.0]).results
    assert alone["edit/to_light/mse"] == pytest.approx(m["edit/to_light/mse"]) and alone["edit/to_light/success"] == 1.0


def test_each_strength_of_each_direction_gets_its_own_numbers():
    """Two directions at strengths [-2, 2], each column a known edit: the sign of a negative strength turns the
    target the other way, and every per-strength number (success, pixel MSE, FID) lands on its own direction and
    strength, where one strength alone could not tell a swapped index."""
    classifier = AttributeCNN.load("shapes_attributes")
    backend = classifier_backend(classifier, "shapes_classifier")
    originals, to_light = scene_pairs(24, lambda f: replace(f, background="light"))
    _, to_dark = scene_pairs(24, lambda f: replace(f, background="dark"))
    _, to_red = scene_pairs(24, lambda f: replace(f, colour="red"))
    _, unchanged = scene_pairs(24, lambda f: f)
    # (2 directions, 24 samples, 2 strengths, C, H, W): "background" darkens at -2 and lightens at +2,
    # "colour" leaves the image as it is at -2 and turns it red at +2
    edits = torch.cat([torch.cat([to_dark, to_light], 2), torch.cat([unchanged, to_red], 2)])
    reference = reference_statistics(backend, [originals.float() / 127.5 - 1])
    settings = EvaluationSettings(classifier=classifier, fid_backend=backend, reference=reference, batch_size=8)
    m = evaluate_edits(settings, originals, edits, ["background", "colour"], [-2.0, 2.0]).results
    assert m["edit/background/target"] == "light_background" and m["edit/colour/target"] == "red"
    assert m["edit/background/success@-2"] == 1.0 and m["edit/background/success@2"] == 1.0
    light = sum(draw_factors(3, "test", i, 32).background == "light" for i in range(24))
    assert m["edit/score_delta/background/light_background@-2"] == pytest.approx(-light / 24, abs=0.02)
    assert m["edit/score_delta/background/light_background@2"] == pytest.approx((24 - light) / 24, abs=0.02)
    for j, name in enumerate(["background", "colour"]):
        for k, strength in enumerate(["-2", "2"]):
            pixels = ((edits[j, :, k].double() - originals.double()) / 255).pow(2).mean()
            assert m[f"edit/{name}/mse@{strength}"] == pytest.approx(float(pixels), rel=1e-6)
    fid = {
        key: m[f"edit/{key[0]}/fid/shapes_classifier@{key[1]}"]
        for key in (("background", -2), ("background", 2), ("colour", 2))
    }
    assert m["edit/colour/fid/shapes_classifier@-2"] < 1e-3 < min(fid.values()), fid


def test_two_processes_give_the_single_process_numbers():
    """DDP on two CPU processes (gloo): each sees half the samples; the reduced metrics equal one process's. The
    15 samples do not split evenly, so a sampler that evened out the processes by repeating a sample would count
    it twice."""
    classifier = AttributeCNN.load("shapes_attributes")
    backend = classifier_backend(classifier, "shapes_classifier")
    originals, to_light = scene_pairs(24, lambda f: replace(f, background="light"))
    _, to_red = scene_pairs(24, lambda f: replace(f, colour="red"))
    # Keep scenes whose every decision is clear, so float differences between processes cannot flip one.
    probabilities = [
        classifier.probabilities(images.float() / 127.5 - 1)
        for images in (originals, to_light[0, :, 0], to_red[0, :, 0])
    ]
    clear = (
        torch.stack([(p - 0.5).abs().min(dim=1).values > 0.05 for p in probabilities])
        .all(dim=0)
        .nonzero()
        .flatten()[:15]
    )
    assert len(clear) == 15
    originals, edits = originals[clear], torch.cat([to_light, to_red])[:, clear]
    reference = reference_statistics(backend, [originals.float() / 127.5 - 1])
    settings = EvaluationSettings(classifier=classifier, fid_backend=backend, reference=reference, batch_size=4)
    single_module = evaluate_edits(settings, originals, edits, ["light", "red"], [1.0])
    spawned_module = evaluate_edits(
        settings, originals, edits, ["light", "red"], [1.0], {"strategy": "ddp_spawn", "devices": 2}
    )
    single, spawned = single_module.results, spawned_module.results
    # What only the parent process builds: the target names and the score matrix.
    assert (
        [spawned[f"edit/{d}/target"] for d in ("light", "red")]
        == [single[f"edit/{d}/target"] for d in ("light", "red")]
        == ["light_background", "red"]
    )
    (_, rows), (_, single_rows) = spawned_module.score_matrix(), single_module.score_matrix()
    assert (
        rows[0][0] == "light" and rows[0][1:] == pytest.approx(single_rows[0][1:], abs=1e-4) and max(rows[0][1:]) > 0.3
    )
    numeric = {k: v for k, v in single.items() if isinstance(v, float) and not math.isnan(v) and "fid" not in k}
    continuous = {k: v for k, v in numeric.items() if "/success" not in k and "/preserve" not in k}
    assert continuous and {k: spawned[k] for k in continuous} == pytest.approx(continuous, rel=1e-5, abs=1e-6)
    # Every decision is clear (above), so the decision counts agree.
    decisions = {k: v for k, v in numeric.items() if k not in continuous}
    assert decisions and {k: spawned[k] for k in decisions} == pytest.approx(decisions, rel=0, abs=1e-7)
    # The unedited FID compares the originals with themselves: 0, though 15 samples of 256 features make
    # rank-deficient covariances (hspace.metrics.fid.frechet_distance).
    fids = {k: v for k, v in single.items() if "fid/" in k and "num_" not in k}
    assert {k: spawned[k] for k in fids} == pytest.approx(fids, rel=1e-5, abs=1e-6)
    assert abs(spawned["fid/shapes_classifier"]) < 1e-6
    assert spawned["fid/shapes_classifier/num_samples"] == 15 and spawned["fid/shapes_classifier/num_reference"] == 15


def test_locality_across_two_processes_when_one_has_no_region():
    """Locality reduces across processes even when one process's samples have no region: here the second
    sample (the second process's only one) is a plain frame with no object. Each process must still join the
    reduction, and the numbers are one process's."""
    scene = torch.from_numpy(render(draw_factors(3, "test", 0, 32), 32)).permute(2, 0, 1)
    originals = torch.stack([scene, torch.full_like(scene, 40)])
    edits = (originals.int() + 20).clamp(0, 255).to(torch.uint8)[None, :, None]  # every pixel 20 levels up
    settings = EvaluationSettings(locality=LocalityRegion(kind="object"), batch_size=1)
    single = evaluate_edits(settings, originals, edits, ["d"], [1.0]).results
    spawned = evaluate_edits(settings, originals, edits, ["d"], [1.0], {"strategy": "ddp_spawn", "devices": 2}).results
    assert single["edit/d/locality/kept_out"] == 0.0 and single["edit/d/locality/mse_in"] == pytest.approx(
        (20 / 255) ** 2
    )
    assert {k: v for k, v in spawned.items() if "locality" in k} == pytest.approx(
        {k: v for k, v in single.items() if "locality" in k}, rel=1e-6
    )


SPAWNED_MANY_METRICS = """
import torch
from hspace.data.shapes import draw_factors, render
from hspace.metrics.evaluation import EvaluationSettings, evaluate_edits
from hspace.metrics.locality import LocalityRegion
from hspace.quiet import quiet

if __name__ == "__main__":
    quiet()
    scene = torch.from_numpy(render(draw_factors(3, "test", 0, 32), 32)).permute(2, 0, 1)
    originals = torch.stack([scene, scene])
    edits = (originals.int() + 20).clamp(0, 255).to(torch.uint8)[None, :, None].expand(40, 2, 10, 3, 32, 32)
    settings = EvaluationSettings(locality=LocalityRegion(kind="object"), batch_size=1)
    names, strengths = [f"d{i}" for i in range(40)], [float(k) for k in range(10)]
    results = evaluate_edits(settings, originals, edits.contiguous(), names, strengths,
                             {"strategy": "ddp_spawn", "devices": 2}).results
    print(len(results), results["edit/d39/locality/kept_out@9"])
"""


def test_spawned_processes_hand_back_many_metrics_quietly(tmp_path):
    """Lightning passes what spawned processes return through a pipe it reads only once they have exited: 1,760
    logged metrics filled it and the run hung. The numbers come back through a file, and the processes are as
    quiet as the one that spawned them."""
    import os
    import subprocess
    import sys

    (tmp_path / "many.py").write_text(SPAWNED_MANY_METRICS)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(tmp_path / "many.py")], capture_output=True, text=True, env=env, timeout=240
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["1760", "0.0"]
    assert result.stderr.strip() == "", result.stderr[-3000:]  # no distributed banner, no sync_dist advice
