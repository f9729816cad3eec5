"""The Python API and the diffusers pipeline, as the README shows them."""

import re
from dataclasses import dataclass, field, replace
from math import nan
from pathlib import Path

import numpy as np
import pytest
import torch

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_the_readme_example_runs_and_the_pipeline_round_trip_gives_the_same_images(tmp_path, monkeypatch):
    from hspace.errors import UserError

    section = README.split("### Python API and diffusers pipeline\n", 1)[1].split("\n### ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)

    edited, inverted, images, again = scope["edited"], scope["inverted"], scope["images"], scope["again"]
    assert edited.images.shape == (2, 3, 3, 32, 32) and (tmp_path / "pc0.png").is_file()
    torch.testing.assert_close(edited.images[:, 1], edited.unedited)  # strength 0 is the plain sample
    assert not torch.allclose(edited.images[:, 0], edited.images[:, 2])
    assert len(inverted.pil()) == 2 and len(scope["first_row"]) == 3
    # The pipeline draws what the API draws, and a saved and reloaded pipeline draws the same again.
    assert len(images) == 6
    ours = np.stack([np.asarray(image) for row in edited.pil() for image in row])
    np.testing.assert_array_equal(np.stack([np.asarray(i) for i in images]), ours)
    reloaded = again(seeds=[0, 1], directions=scope["directions"], index=0, strengths=[-4, 0, 4]).images
    np.testing.assert_array_equal(np.stack([np.asarray(i) for i in reloaded]), ours)
    assert (tmp_path / "hspace-pipeline" / "model_index.json").is_file()
    # an unknown output type is refused before any sampling
    monkeypatch.setattr("hspace.api.edit_seeds", lambda *args, **kwargs: pytest.fail("sampled before refusing"))
    with pytest.raises(UserError, match="output_type='np' is not one of pil, pt"):
        again(seeds=[0], directions=scope["directions"], output_type="np")


def test_bad_python_inputs_are_one_line_before_any_model_runs(tmp_path, monkeypatch):
    """Each bad argument of edit_seeds / edit_images is a UserError naming it, raised before sampling or inversion
    (the model's UNet fails if it is called)."""
    from PIL import Image

    from hspace import api
    from hspace.directions.container import Directions
    from hspace.edits.shift import ShiftEdit
    from hspace.edits.strategy import EditStrategy
    from hspace.errors import UserError

    model = api.load_model("shapes32")
    sampler = api.SamplerSettings(num_steps=4, spacing="trailing")
    grid = sampler.schedule(model.alphas_cumprod).timesteps
    directions = Directions(
        torch.ones(2, 4, *model.h_shape), torch.ones(2, 4), grid, ["a", "b"], "test", "shapes32", model.weight_hash,
        {"num_steps": 4, "spacing": "trailing", "final_alpha": "one"}, noise_schedule=model.noise_schedule,
    )  # fmt: skip

    def ran(*args, **kwargs):
        raise AssertionError("the UNet ran before the bad input was refused")

    monkeypatch.setattr(model.unet, "forward", ran)
    Image.new("RGB", (40, 40), (200, 10, 10)).save(tmp_path / "red.png")
    cases = [
        (lambda: api.edit_seeds(model, directions, seeds=3), "seeds=3 is one number"),
        (lambda: api.edit_seeds(model, directions, seeds=[]), "seeds is empty"),
        (lambda: api.edit_seeds(model, directions, seeds=[0.0, 1.0]), r"seeds\[0\]=0.0 is not a whole number"),
        (lambda: api.edit_seeds(model, directions, seeds=[0], index=2), "index=2 is above 1"),
        (lambda: api.edit_images(model, directions, torch.zeros(1, 3, 64, 64)), r"shape \(1, 3, 64, 64\)"),
        (lambda: api.edit_images(model, directions, torch.zeros(1, 3, 32, 32, dtype=torch.uint8)), "torch.uint8"),
        (lambda: api.edit_images(model, directions, torch.full((1, 3, 32, 32), 2.0)), "range over"),
        (
            lambda: api.edit_images(model, directions, torch.zeros(2, 3, 32, 32).index_fill(0, torch.tensor([1]), nan)),
            r"images\[1\] holds NaN or infinite values",
        ),
        (lambda: api.edit_images(model, directions, []), "images is empty"),
        (lambda: api.edit_images(model, directions, [tmp_path / "none.png"]), "cannot read the image"),
        (lambda: api.edit_images(model, directions, [1, 2]), r"images\[0\] is a int"),
        (lambda: api.edit_images(model, directions, tmp_path / "red.png", index=5), "index=5 is above 1"),
        (
            lambda: api.edit_seeds(model, directions, [0], edit=ShiftEdit(strengths=[1.0], window=[100, 0])),
            r"edit.window=\[100, 0\] holds no step of the 4-step grid",
        ),
    ]
    # arguments of the wrong type: the names of things instead of the things, numbers instead of lists

    @dataclass
    class OneColumn(EditStrategy):  # an edit of one's own that returns one column whatever its strengths
        strengths: list = field(default_factory=lambda: [-1.0, 1.0])
        name = "test_one_column"

        def apply(self, model, schedule, directions, index, x_T, z, clip_x0=False, states=None):
            return torch.zeros(len(x_T), 1, *x_T.shape[1:])

    cases += [
        (lambda: api.edit_seeds(model, directions, seeds=None), "seeds=None is not a list"),
        (lambda: api.edit_seeds(model, directions, [0], strengths=4), "strengths=4 is not a list"),
        (lambda: api.edit_seeds(model, directions, [0], strengths=[nan]), r"edit.strengths\[0\]=nan"),
        (lambda: api.edit_seeds(model, directions, [0], edit=OneColumn(strengths=[])), "edit.strengths=\\[\\]"),
        (lambda: api.edit_seeds(model, directions, [0], edit="shift"), "edit is a str .* not a EditStrategy"),
        (lambda: api.edit_seeds(model, directions, [0], sampler=10), "sampler is a int"),
        (lambda: api.edit_seeds(model, "run/directions.safetensors", [0]), "directions is a str .*load_directions"),
        (lambda: api.find_directions(model, "pca"), "method is a str .* not a DirectionMethod"),
        (lambda: api.edit_seeds(model, directions, [0], edit=OneColumn()), r"returned \(1, 1, 3, 32, 32\) for 1"),
    ]
    from diffusers import DDIMScheduler, DDPMScheduler

    from hspace.directions.class_mean import ClassMeanDirections
    from hspace.pipeline import HSpaceEditPipeline

    still = replace(directions, vectors=torch.zeros_like(directions.vectors))  # directions of x_t, as LOCO's
    cases += [
        (
            lambda: api.Edited(torch.zeros(1, 3, 3, 32, 32), torch.zeros(1, 3, 32, 32), [-1, 0, 1]).grid(scale=0),
            "scale",
        ),
        (lambda: ClassMeanDirections(attributes="large"), r"method.attributes='large' is one name, not a list"),
        (lambda: ClassMeanDirections(attributes=["large"], top_k=50, num_index=64), "below twice method.top_k=50"),
        (lambda: HSpaceEditPipeline(model.unet, DDPMScheduler.from_config(model.scheduler_config))([0], still), "x_t"),
    ]
    # a pipeline handed a scheduler other than the model's own (epsilon, linear betas) would draw other images

    foreign = HSpaceEditPipeline(unet=model.unet, scheduler=DDIMScheduler())
    cases.append((lambda: foreign(seeds=[0], directions=directions), "were found under schedule .* prediction_type"))
    for call, words in cases:
        with pytest.raises(UserError, match=words):
            call()
    # one image (a path, a PIL image, or (C, H, W)) is a batch of one, at the model's size
    one = api.as_tensor(tmp_path / "red.png", model.image_shape)
    assert one.shape == (1, 3, 32, 32) and one[0, 0].mean() > 0.5 > one[0, 1].mean()
    assert api.as_tensor(Image.open(tmp_path / "red.png"), model.image_shape).shape == (1, 3, 32, 32)
    assert api.as_tensor(torch.zeros(3, 32, 32), model.image_shape).shape == (1, 3, 32, 32)
    assert api.as_tensor(np.zeros((2, 3, 32, 32), np.float32), model.image_shape).shape == (2, 3, 32, 32)
    # seeds and strengths as tensors or arrays are lists of their numbers
    assert api.seed_list(torch.arange(2)) == [0, 1] and api.seed_list(np.arange(1, 3)) == [1, 2]
    assert api.prepared(model, directions, 0, torch.tensor([-2.0, 2.0]), None, sampler).edit.strengths == [-2.0, 2.0]
    # an edit's own strengths are kept unless strengths= is given
    ready = api.prepared(model, directions, 0, None, ShiftEdit(strengths=[-8.0, 8.0]), sampler)
    assert ready.edit.strengths == [-8.0, 8.0] and torch.equal(ready.schedule.timesteps, grid)
    assert api.prepared(model, directions, 0, [1.0], ShiftEdit(strengths=[-8.0, 8.0]), sampler).edit.strengths == [1.0]
    assert api.prepared(model, directions, 0, None, None, sampler).edit.strengths == [-4.0, 0.0, 4.0]
    assert api.prepared(model, directions, -1, None, None, sampler).index == 1  # from the end, as in a list
    with pytest.raises(UserError, match="index=-3 is below -2"):
        api.prepared(model, directions, -3, None, None, sampler)


def test_images_of_zero_to_one_get_a_note(capsys):
    """torchvision's ToTensor gives pixels in [0, 1], which the model would read as [-1, 1] pixels no darker than
    mid-grey: a note says how to scale them; images with pixels below 0 get none."""
    from hspace import api

    api.checked_pixels(torch.full((1, 3, 32, 32), 0.5), (3, 32, 32))
    assert "give images * 2 - 1" in capsys.readouterr().err
    api.checked_pixels(torch.linspace(-1, 1, 3 * 32 * 32).reshape(1, 3, 32, 32), (3, 32, 32))
    assert capsys.readouterr().err == ""
