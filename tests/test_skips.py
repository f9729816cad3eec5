"""Cut skip connections: the cut levels' output does not depend on the skips, and misaligned groups are refused."""

import pytest
import torch
from diffusers import UNet2DModel

from hspace.bottleneck import HSpace
from hspace.diffusion.skips import cut_skips, skip_inputs, skip_weight_norm


def unet(channels=(8, 8, 8), groups=4):
    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=16,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=channels,
        down_block_types=["DownBlock2D"] * len(channels),
        up_block_types=["UpBlock2D"] * len(channels),
        norm_num_groups=groups,
    )


def test_cut_levels_ignore_their_skips():
    net = unet()
    cut_skips(net, 2)
    assert skip_weight_norm(net, 2) == 0 and skip_weight_norm(net, 3) > 0
    assert [e.level for e in skip_inputs(net, 2)] == [0, 0, 1, 1]
    # Perturbing a skip the cut levels read changes nothing; perturbing the bottleneck h changes the output.
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([500, 500])
    base = net(x, t).sample
    outputs = {}

    def shift_skips(first):  # shift the skips a block hands on, from index `first`
        def hook(module, args, output):
            hidden, skips = output
            return hidden, tuple(s + 1.0 if i >= first else s for i, s in enumerate(skips))

        return hook

    # The two cut up blocks read: the coarsest blocks' skips and the downsampled output of the finest.
    handles = [
        net.down_blocks[2].register_forward_hook(shift_skips(0)),
        net.down_blocks[1].register_forward_hook(shift_skips(0)),
        net.down_blocks[0].register_forward_hook(shift_skips(1)),
    ]
    outputs["skip"] = net(x, t).sample
    for handle in handles:
        handle.remove()
    handle = net.down_blocks[0].register_forward_hook(shift_skips(0))
    outputs["kept skip"] = net(x, t).sample
    handle.remove()
    with HSpace(net) as hs:
        hs.add(torch.ones(1, 8, 4, 4))
        outputs["h"] = net(x, t).sample
    assert torch.allclose(outputs["skip"], base, atol=1e-5)
    assert (outputs["h"] - base).abs().max() > 1e-2 and (outputs["kept skip"] - base).abs().max() > 1e-2


def test_gradients_keep_cut_weights_zero():
    net = unet()
    cut_skips(net, 1)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=0.1)
    for _ in range(3):
        loss = net(torch.randn(2, 3, 16, 16), torch.tensor([10, 900])).sample.pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert skip_weight_norm(net, 1) == 0


def test_misaligned_groups_are_refused():
    with pytest.raises(ValueError, match="straddle"):
        cut_skips(unet(channels=(8, 16, 16), groups=4), 3)
    with pytest.raises(ValueError, match="between 0 and 3"):
        cut_skips(unet(), 4)


def test_each_skip_input_splits_off_the_decoder_width_the_block_receives():
    """With widths that differ between levels, the decoder part of each up block's first resnet input is what the
    block below hands it (measured in a forward pass), not the bottleneck's width."""
    net = unet(channels=(8, 16, 32))
    received = {}

    def record(level):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            received.setdefault(level, hidden.shape[1])

        return hook

    handles = [block.register_forward_pre_hook(record(i), with_kwargs=True) for i, block in enumerate(net.up_blocks)]
    net(torch.randn(1, 3, 16, 16), torch.tensor([500]))
    for handle in handles:
        handle.remove()
    firsts = {}
    for entry in skip_inputs(net, 3):
        firsts.setdefault(entry.level, entry.decoder_channels)
    assert firsts == received == {0: 32, 1: 32, 2: 16}
