import subprocess
import sys

import pytest
import torch

from hspace.diffusion.deepen import deepen_bottleneck, deepened_config, new_parameters
from hspace.diffusion.skips import cut_skips, skip_inputs
from tests.conftest import tiny_plain_unet


def record_blocks(unet, seen, name):
    """Record every down block's skip outputs and every up block's inputs and output under (name, kind, index)."""
    for i, block in enumerate(unet.down_blocks):
        block.register_forward_hook(lambda m, a, o, i=i: seen.__setitem__((name, "down", i), o[1]))
    for i, block in enumerate(unet.up_blocks):
        block.register_forward_hook(
            lambda m, a, k, o, i=i: seen.__setitem__((name, "up", i), (a, k, o)), with_kwargs=True
        )


def test_deepening_adds_coarse_levels_and_keeps_every_old_block_in_its_place():
    old = tiny_plain_unet()
    deep = deepen_bottleneck(old, 1)
    assert list(deep.config.block_out_channels) == [8, 24, 24, 24]
    assert len(deep.down_blocks) == len(deep.up_blocks) == 4
    seen = {}
    record_blocks(old, seen, "old")
    record_blocks(deep, seen, "deep")
    h = {}
    for name, net in (("old", old), ("deep", deep)):
        net.mid_block.register_forward_hook(lambda m, a, o, name=name: h.__setitem__(name, o))
    x, t = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)), torch.tensor([3, 700])
    with torch.no_grad():
        old(x, t)
        deep(x, t)
    # The old down path is computed as before; its last block now downsamples once more.
    for i in range(3):
        old_skips, deep_skips = seen["old", "down", i], seen["deep", "down", i]
        assert len(deep_skips) == len(old_skips) + (i == 2)
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(old_skips, deep_skips))
    assert tuple(h["old"].shape[-2:]) == (4, 4) and tuple(h["deep"].shape[-2:]) == (2, 2)
    # Each old up block is up block i + 1 now, with the same weights: fed the old block's inputs, it gives its output.
    with torch.no_grad():
        for i in range(3):
            args, kwargs, output = seen["old", "up", i]
            assert torch.allclose(deep.up_blocks[i + 1](*args, **kwargs), output, atol=1e-6)


def test_deepening_draws_only_the_new_levels_fresh():
    old = tiny_plain_unet()
    deep = deepen_bottleneck(old, 2, seed=5)
    fresh = new_parameters(old, deep, 2)
    assert "down_blocks.2.downsamplers.0.conv.weight" in fresh  # the old coarsest block now downsamples
    assert {k.split(".")[0] + "." + k.split(".")[1] for k in fresh if k.startswith(("up_", "down_"))} == {
        "down_blocks.2",
        "down_blocks.3",
        "down_blocks.4",
        "up_blocks.0",
        "up_blocks.1",
    }
    assert not any(k.startswith(("mid_block", "time_embedding", "conv_")) for k in fresh)
    state, old_state = deep.state_dict(), old.state_dict()
    assert torch.equal(state["up_blocks.4.resnets.1.conv1.weight"], old_state["up_blocks.2.resnets.1.conv1.weight"])
    assert torch.equal(state["mid_block.attentions.0.to_q.weight"], old_state["mid_block.attentions.0.to_q.weight"])
    again = deepen_bottleneck(old, 2, seed=5).state_dict()
    other = deepen_bottleneck(old, 2, seed=6).state_dict()
    assert all(torch.equal(state[k], again[k]) for k in fresh)
    assert not torch.equal(state["down_blocks.3.resnets.0.conv1.weight"], other["down_blocks.3.resnets.0.conv1.weight"])


def test_a_deepened_model_keeps_its_cut_skips_cut():
    """The old cut levels keep their zero skip weights where they move, and the new levels can be cut too."""
    old = tiny_plain_unet()
    cut_skips(old, 2)
    deep = deepen_bottleneck(old, 2)
    for entry in skip_inputs(deep, 4)[3 * 2 :]:  # up blocks 2 and 3 were the old cut levels 0 and 1
        assert not entry.resnet.conv1.weight[:, entry.decoder_channels :].any()
    cut_skips(deep, 4)
    for entry in skip_inputs(deep, 4):
        assert not entry.resnet.conv_shortcut.weight[:, entry.decoder_channels :].any()


def test_deepening_refuses_an_h_smaller_than_one_pixel():
    with pytest.raises(ValueError, match="halve evenly 4 times: add at most 2 levels"):
        deepened_config(tiny_plain_unet(), 3)
    with pytest.raises(ValueError, match="at least one level"):
        deepened_config(tiny_plain_unet(), 0)


@pytest.mark.slow  # about 20 s: the script twice (deepened_config is checked above)
def test_the_deepening_script_refuses_bad_levels_in_one_line(tmp_path):
    for levels, message in (("0", "--levels must be at least 1"), ("3", "--levels 3: 32x32 images halve evenly 5")):
        done = subprocess.run(
            [sys.executable, "scripts/deepen_shapes_model.py", "--levels", levels, "--out", str(tmp_path / "x")],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 2
        assert done.stderr.strip().splitlines() == [done.stderr.strip()] and message in done.stderr
        assert not (tmp_path / "x").exists()


def test_a_derived_unet_is_saved_beside_its_models_scheduler_and_its_output_change_is_measured(model, tmp_path):
    from hspace.diffusion.derived import output_change, save_pretrained_model
    from hspace.diffusion.loading import load_model

    deep = deepen_bottleneck(model.unet, 1)
    assert output_change(model, model.unet) == 0
    assert output_change(model, deep) > 0
    saved = load_model(str(save_pretrained_model(deep, model.scheduler_config, tmp_path / "deep")))
    assert torch.equal(saved.alphas_cumprod, model.alphas_cumprod)
    assert saved.prediction_type == model.prediction_type
    key = "up_blocks.1.resnets.0.conv1.weight"
    assert torch.equal(saved.unet.state_dict()[key], deep.state_dict()[key])
