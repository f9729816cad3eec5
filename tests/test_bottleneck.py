import pytest
import torch

from hspace.bottleneck import HSpace, h_shape


def mid_block_by_hand(unet, x, t):
    """The mid block's output, walking the UNet's own blocks up to it."""
    emb = unet.time_embedding(unet.time_proj(t).to(x.dtype))
    sample = unet.conv_in(x)
    for block in unet.down_blocks:
        sample, _ = block(hidden_states=sample, temb=emb)
    return unet.mid_block(sample, emb)


@pytest.fixture
def inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(3, 3, 16, 16, generator=g), torch.tensor([10, 500, 999])


def test_captured_h_equals_mid_block_output(unet, inputs):
    x, t = inputs
    with HSpace(unet, capture=True) as hs:
        unet(x, t)
    assert len(hs.captured) == 1
    torch.testing.assert_close(hs.captured[0], mid_block_by_hand(unet, x, t), rtol=0, atol=1e-6)
    assert h_shape(unet) == tuple(hs.captured[0].shape[1:]) == (16, 8, 8)


def test_zero_offset_is_bit_identical(unet, inputs):
    x, t = inputs
    natural = unet(x, t).sample
    with HSpace(unet) as hs:
        hs.add(torch.zeros(3, *h_shape(unet)))
        assert torch.equal(unet(x, t).sample, natural)


def test_offset_changes_only_the_edited_rows(unet, inputs):
    x, t = inputs
    natural = unet(x, t).sample
    shape = h_shape(unet)
    with HSpace(unet, capture=True) as hs:
        hs.add(torch.ones(1, *shape), rows=[1])
        edited = unet(x, t).sample
    assert torch.equal(edited[[0, 2]], natural[[0, 2]])
    assert not torch.allclose(edited[1], natural[1])
    # The captured h is the natural one, before the edit.
    torch.testing.assert_close(hs.captured[0], mid_block_by_hand(unet, x, t), rtol=0, atol=1e-6)


def test_offset_on_all_rows_equals_offset_in_the_mid_block(unet, inputs):
    x, t = inputs
    delta = torch.randn(3, *h_shape(unet))
    with HSpace(unet, capture=True) as hs:
        hs.add(delta)
        edited = unet(x, t).sample
    with HSpace(unet) as hs:
        hs.replace(mid_block_by_hand(unet, x, t) + delta)
        replaced = unet(x, t).sample
    torch.testing.assert_close(edited, replaced, rtol=0, atol=1e-5)


def test_replace_rows(unet, inputs):
    x, t = inputs
    with HSpace(unet, capture=True) as hs:
        unet(x, t)
        hs.replace(hs.captured[0][[2]], rows=torch.tensor([False, False, True]))
        same = unet(x, t).sample
    torch.testing.assert_close(same, unet(x, t).sample, rtol=0, atol=1e-6)


def test_hooks_are_removed_on_exit_and_on_error(unet, inputs):
    x, t = inputs
    with HSpace(unet) as hs:
        hs.add(torch.ones(3, *h_shape(unet)))
        assert len(unet.mid_block._forward_hooks) == 1
    assert not unet.mid_block._forward_hooks
    with pytest.raises(RuntimeError, match="boom"):
        with HSpace(unet) as hs:
            hs.add(torch.ones(3, *h_shape(unet)))
            raise RuntimeError("boom")
    assert not unet.mid_block._forward_pre_hooks and not unet.mid_block._forward_hooks
    natural = unet(x, t).sample
    with HSpace(unet):
        pass
    assert torch.equal(unet(x, t).sample, natural)
