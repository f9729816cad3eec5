import subprocess
import sys

import numpy as np
import pytest
import torch

from hspace.diffusion.widen import check_widenable, group_copies, widen_finest_level
from tests.conftest import tiny_plain_unet


def test_group_copies_keep_every_group_norm_statistic():
    copies = group_copies(16, 3, 2)
    assert len(copies) == 48
    for size in (2, 4, 8):  # the groups of the level alone, and of it concatenated with as wide a tensor
        for group in range(16 // size):
            members = copies[group * size * 3 : (group + 1) * size * 3]
            assert sorted(members) == sorted(np.repeat(np.arange(group * size, (group + 1) * size), 3))


def test_widening_keeps_the_time_embedding_and_the_whole_down_path():
    """Up to the bottleneck a widened UNet computes copies of the old activations exactly: the time embedding
    through the sinusoid's shared frequencies, every group norm through group-wise copies."""
    old = tiny_plain_unet()
    new = widen_finest_level(old, 16)
    assert new.config.block_out_channels == (16, 24, 24) or list(new.config.block_out_channels) == [16, 24, 24]
    copies = torch.as_tensor(group_copies(8, 2, 2))
    seen = {}
    for name, net in (("old", old), ("new", new)):
        net.time_embedding.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__((name, "time"), o))
        net.down_blocks[0].register_forward_hook(lambda m, i, o, name=name: seen.__setitem__((name, "fine"), o[0]))
        net.mid_block.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__((name, "h"), o))
    x, t = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 10, 500, 999])
    with torch.no_grad():
        old(x, t), new(x, t)
    assert torch.allclose(seen["new", "time"], seen["old", "time"][:, torch.arange(64) // 2], atol=1e-5)
    assert torch.allclose(seen["new", "fine"], seen["old", "fine"][:, copies], atol=1e-5)
    assert torch.allclose(seen["new", "h"], seen["old", "h"], atol=1e-4)


def test_widening_is_exact_but_for_the_two_group_norms_it_names():
    """The whole network, up path included: with the two group norms that see an unwidened decoder path beside a
    widened skip normalised per channel in both models (so their groups no longer matter), the widened UNet's
    output equals the old one's. Any wrongly copied or scaled weight on the up path would show here."""
    old = tiny_plain_unet()
    new = widen_finest_level(old, 16)
    mixed = ("up_blocks.1.resnets.1.norm1", "up_blocks.2.resnets.0.norm1")  # [24 decoder, 8 -> 16 skip] channels
    x, t = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2)), torch.tensor([0, 10, 500, 999])
    with torch.no_grad():
        before, after = old(x, t).sample, new(x, t).sample
        assert float((after - before).pow(2).mean() / before.pow(2).mean()) > 1e-6  # real groups: inexact
        for net in (old, new):
            for name in mixed:
                norm = net.get_submodule(name)
                norm.num_groups = norm.num_channels
        before, after = old(x, t).sample, new(x, t).sample
    assert torch.allclose(after, before, atol=1e-5, rtol=1e-4)
    # Every other group norm on the up path keeps its real groups: one more norm made per-channel in the old
    # model alone breaks the equality, so the comparison above did exercise them.
    old.get_submodule("up_blocks.2.resnets.1.norm1").num_groups = 16
    with torch.no_grad():
        assert not torch.allclose(old(x, t).sample, after, atol=1e-5, rtol=1e-4)


def test_widening_noise_touches_only_widened_tensors():
    old = tiny_plain_unet()
    plain, noisy = widen_finest_level(old, 16), widen_finest_level(old, 16, noise=0.01, seed=3)
    changed = {k for k, v in noisy.state_dict().items() if not torch.equal(v, plain.state_dict()[k])}
    reshaped = {k for k, v in plain.state_dict().items() if v.ndim > 1 and v.shape != old.state_dict()[k].shape}
    assert changed == reshaped and "conv_in.weight" in changed and "mid_block.resnets.0.time_emb_proj.weight" in changed
    assert "mid_block.resnets.0.conv1.weight" not in changed
    for key in changed:  # each widened tensor moved by noise times the spread of the weights it was copied from
        moved = (noisy.state_dict()[key] - plain.state_dict()[key]).std()
        assert float(moved) == pytest.approx(0.01 * float(old.state_dict()[key].std()), rel=0.35), key


@pytest.mark.parametrize("channels,message", [(12, "larger multiple"), (8, "larger multiple"), (4, "larger multiple")])
def test_widening_refuses_widths_it_cannot_copy_to(channels, message):
    with pytest.raises(ValueError, match=message):
        check_widenable(tiny_plain_unet(), channels)


@pytest.mark.slow  # about 20 s: the script three times (the widening itself is checked above)
def test_the_widening_script_writes_a_loadable_model_and_refuses_bad_widths(tmp_path):
    from hspace.diffusion.loading import load_model

    out = tmp_path / "wide"
    script = "scripts/widen_shapes_model.py"
    bad = subprocess.run(
        [sys.executable, script, "--channels", "40", "--out", str(out)], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "--channels 40" in bad.stderr.strip().splitlines()[-1] and not out.exists()
    done = subprocess.run(
        [sys.executable, script, "--channels", "32", "--out", str(out)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "output moved by" in done.stdout
    model = load_model(str(out))
    assert list(model.unet.config.block_out_channels) == [32, 48, 48, 48]
