"""Edits scored by Shapes factors measured from pixels (hspace.metrics.factor_scores), on rendered edits whose
effect is known."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from hspace.data.shapes import BACKGROUNDS, COLOURS, SHAPES, ShapesFactors, render
from hspace.errors import UserError
from hspace.metrics.factor_scores import FactorTarget, factor_scores

STRENGTHS = [-1.0, 0.0, 1.0]


def scenes(n: int = 24) -> list[ShapesFactors]:
    """Objects well inside the image, every background, colour and shape."""
    rng = np.random.default_rng(0)
    return [
        ShapesFactors(
            tuple(BACKGROUNDS)[i % 2],
            tuple(COLOURS)[i % 4],
            SHAPES[i % 3],
            float(rng.uniform(5, 7)),
            float(rng.uniform(13, 19)),
            float(rng.uniform(13, 19)),
        )
        for i in range(n)
    ]


def images(factors: list[ShapesFactors]) -> torch.Tensor:
    return torch.from_numpy(np.stack([render(f, 32) for f in factors])).permute(0, 3, 1, 2).contiguous()


def edit_set(base: list[ShapesFactors], edits: dict[str, dict[float, callable]]) -> torch.Tensor:
    """uint8 edits (D, N, S, C, H, W): direction d at strength s renders edits[d][s](factors)."""
    return torch.stack(
        [torch.stack([images([edit[s](f) for f in base]) for s in STRENGTHS], dim=1) for edit in edits.values()]
    )


def grow(f, px):
    return replace(f, r=f.r + px)


def recolour(f, sign):
    if sign > 0:
        return replace(f, colour="red")
    return replace(f, colour="blue") if f.colour == "red" else f


KNOWN = {
    "grow": {-1.0: lambda f: grow(f, -1.5), 0.0: lambda f: f, 1.0: lambda f: grow(f, 1.5)},
    "red": {-1.0: lambda f: recolour(f, -1), 0.0: lambda f: f, 1.0: lambda f: recolour(f, 1)},
}


def test_known_edits_are_found_with_their_target_success_and_no_leakage():
    base = scenes()
    metrics, (columns, rows) = factor_scores(images(base), edit_set(base, KNOWN), list(KNOWN), STRENGTHS, {}, 2)
    assert metrics["factors/valid"] == 1.0
    assert metrics["edit/grow/factors/target"] == "r" and metrics["edit/red/factors/target"] == "colour=red"
    for name in KNOWN:
        key = f"edit/{name}/factors"
        assert metrics[f"{key}/success@1"] == metrics[f"{key}/success"] == 1.0
        assert metrics[f"{key}/success@-1"] == 1.0  # shrinks every object; turns every red object blue
        assert math.isnan(metrics[f"{key}/success@0"])
        assert metrics[f"{key}/valid@1"] == 1.0 and metrics[f"{key}/leakage@0"] == 0
    assert metrics["edit/grow/factors/change/r@1"] == pytest.approx(1.5 / 32, abs=0.2 / 32)
    assert metrics["edit/grow/factors/change/r@-1"] == pytest.approx(-1.5 / 32, abs=0.2 / 32)
    assert metrics["edit/grow/factors/leakage@1"] < 0.05  # centres move by measurement noise only
    assert metrics["edit/grow/factors/leakage/shape@1"] == 0 and "edit/grow/factors/leakage/r@1" not in metrics
    assert metrics["edit/red/factors/change/colour@1"] == pytest.approx(18 / 24)  # all but the red ones flip
    assert metrics["edit/red/factors/leakage@1"] < 0.05
    assert columns[:6] == ["direction", "strength", "target", "success", "leakage", "valid"]
    assert len(rows) == 6 and rows[2][:4] == ["grow", 1.0, "r", 1.0]


def test_a_given_target_is_scored_as_given():
    base = scenes()
    metrics, _ = factor_scores(images(base), edit_set(base, KNOWN), list(KNOWN), STRENGTHS, {"grow": "-r"}, 2)
    assert metrics["edit/grow/factors/target"] == "-r"
    # "-r": positive strengths should shrink and negative ones grow; this edit does the opposite at both.
    assert metrics["edit/grow/factors/success@1"] == 0.0 and metrics["edit/grow/factors/success@-1"] == 0.0
    assert metrics["edit/red/factors/success@1"] == 1.0


def test_a_direction_the_generated_samples_found_no_target_for_gets_none_on_the_real_images():
    """The real images are judged on the generated samples' targets, and on none where those found none."""
    import math

    from hspace.job.score import with_generated_targets
    from hspace.metrics.evaluation import EvaluationSettings

    generated = {"edit/grow/factors/target": None, "edit/red/factors/target": "colour=red", "edit/grow/target": None}
    settings = with_generated_targets(EvaluationSettings(factor_targets={"red": "colour=blue"}), generated, list(KNOWN))
    assert settings.factor_targets == {"grow": None, "red": "colour=blue"}  # the config's target wins
    assert settings.targets == {"grow": None}
    base = scenes()
    metrics, _ = factor_scores(images(base), edit_set(base, KNOWN), list(KNOWN), STRENGTHS, settings.factor_targets, 2)
    assert metrics["edit/grow/factors/target"] is None and math.isnan(metrics["edit/grow/factors/success@1"])
    assert metrics["edit/red/factors/target"] == "colour=blue"


def test_edits_that_destroy_the_object_are_invalid():
    base = scenes(6)
    blank = {"erase": {s: (lambda f: replace(f, r=0.0)) if s else (lambda f: f) for s in STRENGTHS}}
    metrics, _ = factor_scores(images(base), edit_set(base, blank), ["erase"], STRENGTHS, {}, 2)
    assert metrics["edit/erase/factors/valid@1"] == 0.0 and metrics["edit/erase/factors/valid@0"] == 1.0
    assert math.isnan(metrics["edit/erase/factors/success@1"])


def test_with_valid_pairs_an_image_the_renderer_never_makes_is_left_out_instead_of_measured():
    """The grow edit, except that at +1 four of its 24 objects are faded 45% of the way to the grey (no palette
    colour: an image the renderer never makes), which the measurement reads as a smaller object: over pairs
    holding an object they count (radius change well below +1.5 pixels, success 20 of 24), over valid pairs
    (the default) they are left out like a lost object (count 20, the change and success of the clean edit);
    valid@1 counts all 24 either way."""
    base = scenes()
    edits = edit_set(base, {"grow": KNOWN["grow"]})
    grey = edits[0, :4, 2, :, :1, :1].double()
    edits[0, :4, 2] = (grey + 0.55 * (edits[0, :4, 2].double() - grey)).round().to(torch.uint8)
    counted, _ = factor_scores(images(base), edits, ["grow"], STRENGTHS, {"grow": "r"}, 2, pairs="object")
    valid, _ = factor_scores(images(base), edits, ["grow"], STRENGTHS, {"grow": "r"}, 2)
    key = "edit/grow/factors"
    assert counted[f"{key}/count@1"] == 24 and valid[f"{key}/count@1"] == 20
    assert counted[f"{key}/change/r@1"] < 1.25 / 32 and counted[f"{key}/success@1"] == pytest.approx(20 / 24)
    assert valid[f"{key}/change/r@1"] == pytest.approx(1.5 / 32, abs=0.2 / 32) and valid[f"{key}/leakage@1"] < 0.05
    assert valid[f"{key}/success@1"] == 1.0 and counted[f"{key}/valid@1"] == valid[f"{key}/valid@1"] == 20 / 24
    assert valid[f"{key}/count@-1"] == counted[f"{key}/count@-1"] == 24
    with pytest.raises(ValueError, match="pairs must be one of"):
        factor_scores(images(base), edits, ["grow"], STRENGTHS, {}, 2, pairs="all")


@pytest.mark.parametrize(
    "text, expected",
    [("r", FactorTarget("r")), ("-cy", FactorTarget("cy", sign=-1)), ("shape=square", FactorTarget("shape", value=1))],
)
def test_targets_parse(text, expected):
    assert FactorTarget.parse(text, "metrics.factor_targets.pc0") == expected
    assert str(expected) == text


def test_an_unknown_target_is_one_line():
    with pytest.raises(UserError, match=r"metrics.factor_targets.pc0='size' is not a Shapes factor target: use one of"):
        FactorTarget.parse("size", "metrics.factor_targets.pc0")
    with pytest.raises(UserError):
        FactorTarget.parse("colour=purple", "metrics.factor_targets.pc0")


def test_background_kept_measures_how_local_an_edit_is():
    from hspace.metrics.factor_scores import background_kept

    base = scenes(1)[0]
    original = render(base, 32)
    moved = render(replace(base, cx=base.cx + 3), 32)
    assert background_kept(original, original) == 1.0 and background_kept(original, moved) == 1.0  # object only
    noisy = original.copy()
    noisy[:4] = np.clip(noisy[:4].astype(int) + 40, 0, 255)  # a band of background changed
    assert background_kept(original, noisy) < 0.9
    base_metrics, _ = factor_scores(images([base]), edit_set([base], KNOWN)[:1], ["grow"], STRENGTHS, {}, 2)
    assert base_metrics["edit/grow/factors/background_kept@1"] == 1.0


def test_an_edit_that_loses_every_object_has_no_target_and_says_how_many_pairs_it_measured():
    """Success, leakage and change are taken over the samples that hold an object before and after the edit;
    `count` says how many. Where no strength keeps one, no target is guessed (null), instead of the first
    factor's first value."""
    from hspace.data.shapes import draw_factors, render
    from hspace.metrics.factor_scores import factor_scores

    originals = torch.from_numpy(np.stack([render(draw_factors(0, "test", i, 32), 32) for i in range(4)]))
    originals = originals.permute(0, 3, 1, 2).contiguous()
    blank = torch.full_like(originals, 40)  # a dark background and no object
    edits = torch.stack([blank, originals], dim=1)[None]  # (D=1, N=4, S=2): lost at -2, unchanged at 0
    metrics, _ = factor_scores(originals, edits, ["d"], [-2.0, 0.0], {}, headline=0)
    assert metrics["edit/d/factors/target"] is None and metrics["edit/d/factors/count@-2"] == 0
    assert np.isnan(metrics["edit/d/factors/success@-2"]) and np.isnan(metrics["edit/d/factors/leakage@-2"])
    assert metrics["edit/d/factors/count@0"] == 4 and metrics["edit/d/factors/valid@-2"] == 0.0


def test_the_run_config_chooses_the_pairs():
    from hydra import compose, initialize_config_dir

    from hspace.cli import CONFIG_DIR
    from hspace.cli.metrics import evaluation_settings

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        default = compose(config_name="run")
        chosen = compose(config_name="run", overrides=["metrics.factor_pairs=object"])
    assert evaluation_settings(default.metrics, torch.device("cpu")).factor_pairs == "valid"
    assert evaluation_settings(chosen.metrics, torch.device("cpu")).factor_pairs == "object"


def test_a_model_whose_samples_the_judge_fails_is_told_so_in_the_run_summary():
    """Pixel noise of std 0.04 (on [0, 1]) fails every image while its object is still measured: over judged-valid
    pairs no direction gets a target, and the summary hspace-run prints names them with the judge's pass rate
    instead of printing nothing; over pairs holding an object the same edits are scored."""
    from hspace.job.outputs import factor_summary

    base = scenes(8)
    rng = torch.Generator().manual_seed(0)

    def noisy(x: torch.Tensor) -> torch.Tensor:
        return (
            (x.double() + 255 * 0.04 * torch.randn(x.shape, generator=rng, dtype=torch.float64))
            .clamp(0, 255)
            .round()
            .to(torch.uint8)
        )

    originals, edits = noisy(images(base)), noisy(edit_set(base, KNOWN))
    valid, _ = factor_scores(originals, edits, list(KNOWN), STRENGTHS, {}, 2)
    counted, _ = factor_scores(originals, edits, list(KNOWN), STRENGTHS, {}, 2, pairs="object")
    assert valid["factors/valid"] == 0.0 and valid["edit/grow/factors/target"] is None
    assert counted["edit/grow/factors/target"] == "r"
    lines = factor_summary(valid, list(KNOWN))
    assert lines[-1].startswith("  grow, red: no pair measured; the pixel judge passes 0% of the unedited samples")
    assert "metrics.factor_pairs" in lines[-1]
    scored = factor_summary(counted, list(KNOWN))
    assert len(scored) == 3 and scored[1].startswith("  grow: r: success")
    assert factor_summary({"edit/grow/target": "large"}, ["grow"]) == []  # no factors scored: nothing to say


def test_the_summary_names_no_worst_leak_where_the_headline_strength_has_no_pair():
    """An edit that loses every object at its headline strength (-1) but grows them at +1 gets its target from
    +1; at the headline its success and leakage are NaN, and the summary names no factor as the worst leak."""
    from hspace.job.outputs import factor_summary

    base = scenes(6)
    lost = {"d": {-1.0: lambda f: replace(f, r=0.0), 0.0: lambda f: f, 1.0: lambda f: grow(f, 1.5)}}
    metrics, _ = factor_scores(images(base), edit_set(base, lost), ["d"], STRENGTHS, {}, 0)
    assert metrics["edit/d/factors/target"] == "r" and math.isnan(metrics["edit/d/factors/leakage"])
    assert factor_summary(metrics, ["d"])[1] == "  d: r: success nan, leakage nan, valid 0.00"


def test_an_edit_that_moves_nothing_has_no_target_and_the_summary_says_so():
    """Edits identical to their originals move no factor: no target is guessed (before, the first factor's first
    value, background=dark, with success 0 and leakage 0, which read as a clean background edit), and the run
    summary says the edits move nothing rather than that no pair was measured."""
    from hspace.job.outputs import factor_summary

    base = scenes(6)
    still = {"d": {s: (lambda f: f) for s in STRENGTHS}}
    metrics, _ = factor_scores(images(base), edit_set(base, still), ["d"], STRENGTHS, {}, 2)
    assert metrics["edit/d/factors/target"] is None and metrics["edit/d/factors/count"] == 6
    assert math.isnan(metrics["edit/d/factors/success"]) and math.isnan(metrics["edit/d/factors/leakage"])
    assert factor_summary(metrics, ["d"])[1] == "  d: no target: its edits move no factor at the headline strength"


def test_an_edit_of_nearly_no_effect_has_no_target():
    """Edits that shift the object by 0.02 pixels (half a hundredth of a data standard deviation of position): the
    pixels change, but by rounding's amount, so no target is guessed, as for an edit that changes nothing; one that
    shifts it by a pixel gets cx."""
    from hspace.metrics.factor_effects import DATA_STD
    from hspace.metrics.factor_scores import MIN_MOVE

    def shift(px):
        return {-1.0: lambda f: replace(f, cx=f.cx - px), 0.0: lambda f: f, 1.0: lambda f: replace(f, cx=f.cx + px)}

    base = scenes(6)
    edits = edit_set(base, {"nudge": shift(0.02), "move": shift(1.0)})
    assert not torch.equal(edits[0, :, 2], edits[0, :, 1])  # the nudge does change pixels
    metrics, _ = factor_scores(images(base), edits, ["nudge", "move"], STRENGTHS, {}, 2)
    assert 0 < metrics["edit/nudge/factors/change/cx"] / DATA_STD["cx"] < MIN_MOVE  # measured, below the bar
    assert metrics["edit/nudge/factors/target"] is None and metrics["edit/move/factors/target"] == "cx"


def test_the_worst_leak_is_the_largest_one():
    """A move right that also grows the object: the leakage is the radius's (the largest non-target effect),
    not the smallest (0, the background)."""
    base = scenes()
    move = {"right": {-1.0: lambda f: f, 0.0: lambda f: f, 1.0: lambda f: replace(grow(f, 1.0), cx=f.cx + 3.0)}}
    metrics, _ = factor_scores(images(base), edit_set(base, move), ["right"], STRENGTHS, {"right": "cx"}, 2)
    leaks = {f: metrics[f"edit/right/factors/leakage/{f}@1"] for f in ("background", "colour", "shape", "r", "cy")}
    assert metrics["edit/right/factors/leakage@1"] == max(leaks.values()) == leaks["r"] > 0.5


def measurement(**factors):
    from hspace.data.shapes_factors import ShapeMeasurement

    values = dict(valid=True, background=0, colour=0, shape=0, r=6.0, cx=16.0, cy=16.0) | factors
    return ShapeMeasurement(**values, area=100.0, fill=0.8, extent_fill=0.8, fit_error=0.0)


def test_the_target_is_guessed_at_the_largest_measured_strength_with_its_sign_and_class():
    """Away from the headline strength (here 0, no edit), the guess is made at the largest |strength| with a pair.
    At a negative strength a continuous target is the opposite of the move and a class the one the edit leaves."""
    from hspace.metrics.factor_effects import factor_effects
    from hspace.metrics.factor_scores import guess_index, guess_target

    reference = [measurement(), measurement(colour=2)]
    moved_right = [measurement(cx=19.0), measurement(colour=2, cx=19.0)]
    effects = [factor_effects(reference, moved_right, 32)] * 4
    assert guess_index(effects, [-2.0, 0.0, 1.0, 3.0], headline=1) == 3
    assert guess_index(effects, [-2.0, 0.0, 1.0, 3.0], headline=2) == 2
    assert str(guess_target(effects[0], reference, moved_right, -2.0)) == "-cx"  # moved right at a negative one
    recoloured = [measurement(colour=1), measurement(colour=1)]  # both leave their colour for green
    left = guess_target(factor_effects(reference, recoloured, 32), reference, recoloured, -1.0)
    assert left.factor == "colour" and left.value in (0, 2)
    reference = [measurement(), measurement()]  # the class left is the one they had
    assert guess_target(factor_effects(reference, recoloured, 32), reference, recoloured, -1.0).value == 0


def test_a_move_of_exactly_the_needed_size_succeeds():
    from hspace.metrics.factor_effects import DATA_STD
    from hspace.metrics.factor_scores import SUCCESS_STD, success

    needed = SUCCESS_STD * DATA_STD["cx"] * 32
    reference, edited = [measurement(cx=0.0)], [measurement(cx=needed)]
    assert success(reference, edited, FactorTarget("cx", sign=1), 1.0, 32) == 1.0
    assert success(reference, [measurement(cx=needed * 0.999)], FactorTarget("cx", sign=1), 1.0, 32) == 0.0


def test_a_negative_strength_succeeds_on_the_samples_that_had_the_target_value():
    """Target colour=red, and at -1 the edit swaps red and blue: every red object leaves red (success 1.0), and
    the blue ones turned red do not count against it, since they did not have the value to leave."""
    base = scenes()

    def swap(f):
        return replace(f, colour={"red": "blue", "blue": "red"}.get(f.colour, f.colour))

    edits = {"swap": {-1.0: swap, 0.0: lambda f: f, 1.0: lambda f: f}}
    metrics, _ = factor_scores(images(base), edit_set(base, edits), ["swap"], STRENGTHS, {"swap": "colour=red"}, 2)
    assert metrics["edit/swap/factors/success@-1"] == 1.0
