"""The ADM / iDDPM backbone: guided-diffusion parameter names and shapes for the AFHQ-dog configuration,
loading a checkpoint made in that format, its outputs and h against guided-diffusion's own UNetModel, h-space
access, hspace-run end to end on a tiny one, and its attention, timestep embedding and residual blocks against
their written-out definitions."""

import math

import pytest
import torch
from hydra import compose, initialize_config_dir

from hspace.bottleneck import HSpace
from hspace.cli import CONFIG_DIR
from hspace.cli.run import run
from hspace.diffusion.adm import ADMConfig, ADMUNet
from hspace.diffusion.loading import load_adm
from hspace.errors import UserError
from tests.adm_reference import CONFIGS, FIXTURE, TIMESTEPS, inputs, seeded_state

AFHQ_DOG = dict(
    image_size=256,
    model_channels=128,
    num_res_blocks=1,
    attention_resolutions=(16,),
    channel_mult=(1, 1, 2, 2, 4, 4),
    num_heads=4,
    num_head_channels=64,
    use_scale_shift_norm=True,
    resblock_updown=True,
    learn_sigma=True,
)
SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_schedule="linear",
    beta_start=0.0001,
    beta_end=0.02,
    prediction_type="epsilon",
    clip_sample=False,
)


def resblock(prefix, ch_in, ch_out, emb=512, scale_shift=True):
    keys = {
        f"{prefix}.in_layers.0.weight": (ch_in,),
        f"{prefix}.in_layers.0.bias": (ch_in,),
        f"{prefix}.in_layers.2.weight": (ch_out, ch_in, 3, 3),
        f"{prefix}.in_layers.2.bias": (ch_out,),
        f"{prefix}.emb_layers.1.weight": ((2 if scale_shift else 1) * ch_out, emb),
        f"{prefix}.emb_layers.1.bias": ((2 if scale_shift else 1) * ch_out,),
        f"{prefix}.out_layers.0.weight": (ch_out,),
        f"{prefix}.out_layers.0.bias": (ch_out,),
        f"{prefix}.out_layers.3.weight": (ch_out, ch_out, 3, 3),
        f"{prefix}.out_layers.3.bias": (ch_out,),
    }
    if ch_in != ch_out:
        keys |= {f"{prefix}.skip_connection.weight": (ch_out, ch_in, 1, 1), f"{prefix}.skip_connection.bias": (ch_out,)}
    return keys


def attention(prefix, ch):
    return {
        f"{prefix}.norm.weight": (ch,),
        f"{prefix}.norm.bias": (ch,),
        f"{prefix}.qkv.weight": (3 * ch, ch, 1),
        f"{prefix}.qkv.bias": (3 * ch,),
        f"{prefix}.proj_out.weight": (ch, ch, 1),
        f"{prefix}.proj_out.bias": (ch,),
    }


def afhq_dog_expected() -> dict[str, tuple]:
    """guided-diffusion's UNetModel for the AFHQ-dog flags, block by block: resolution 256 -> 8 over six
    levels of 128, 128, 256, 256, 512, 512 channels, one ResBlock per level, ResBlock down/up-sampling,
    attention at 16x16 and in the middle block, learned variance (6 output channels)."""
    keys = {
        "time_embed.0.weight": (512, 128),
        "time_embed.0.bias": (512,),
        "time_embed.2.weight": (512, 512),
        "time_embed.2.bias": (512,),
        "input_blocks.0.0.weight": (128, 3, 3, 3),
        "input_blocks.0.0.bias": (128,),
    }
    # input blocks: (index, in, out, attention, is_downsample)
    layout = [
        (1, 128, 128, False, False),
        (2, 128, 128, False, True),
        (3, 128, 128, False, False),
        (4, 128, 128, False, True),
        (5, 128, 256, False, False),
        (6, 256, 256, False, True),
        (7, 256, 256, False, False),
        (8, 256, 256, False, True),
        (9, 256, 512, True, False),
        (10, 512, 512, False, True),
        (11, 512, 512, False, False),
    ]
    for index, c_in, c_out, attn, _ in layout:
        keys |= resblock(f"input_blocks.{index}.0", c_in, c_out)
        if attn:
            keys |= attention(f"input_blocks.{index}.1", c_out)
    keys |= (
        resblock("middle_block.0", 512, 512) | attention("middle_block.1", 512) | resblock("middle_block.2", 512, 512)
    )
    # output blocks: (index, concatenated in, out, attention, upsample)
    layout = [
        (0, 1024, 512, False, False),
        (1, 1024, 512, False, True),
        (2, 1024, 512, True, False),
        (3, 768, 512, True, True),
        (4, 768, 256, False, False),
        (5, 512, 256, False, True),
        (6, 512, 256, False, False),
        (7, 384, 256, False, True),
        (8, 384, 128, False, False),
        (9, 256, 128, False, True),
        (10, 256, 128, False, False),
        (11, 256, 128, False, False),
    ]
    for index, c_in, c_out, attn, up in layout:
        keys |= resblock(f"output_blocks.{index}.0", c_in, c_out)
        if attn:
            keys |= attention(f"output_blocks.{index}.1", c_out)
        if up:
            keys |= resblock(f"output_blocks.{index}.{2 if attn else 1}", c_out, c_out)
    keys |= {"out.0.weight": (128,), "out.0.bias": (128,), "out.2.weight": (6, 128, 3, 3), "out.2.bias": (6,)}
    return keys


def test_afhq_dog_state_dict_matches_the_guided_diffusion_layout():
    with torch.device("meta"):
        unet = ADMUNet(ADMConfig(**AFHQ_DOG))
    ours = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    expected = afhq_dog_expected()
    assert sorted(set(expected) - set(ours)) == [] and sorted(set(ours) - set(expected)) == []
    assert ours == expected


TINY = dict(
    image_size=32,
    model_channels=32,
    num_res_blocks=1,
    attention_resolutions=[16],
    channel_mult=[1, 2],
    num_heads=2,
    num_head_channels=-1,
)


@pytest.fixture
def tiny_checkpoint(tmp_path):
    torch.manual_seed(0)
    unet = ADMUNet(ADMConfig(**TINY))
    for p in unet.parameters():  # out-layers start at zero in training; give every weight a value
        torch.nn.init.normal_(p, std=0.05)
    path = tmp_path / "tiny_adm.pt"
    torch.save(unet.state_dict(), path)  # the guided-diffusion checkpoint format: a plain state dict
    return path, unet


def test_checkpoint_loads_with_learned_variance_and_h_access(tiny_checkpoint):
    path, reference = tiny_checkpoint
    model = load_adm(str(path), TINY, SCHEDULER)
    x = torch.randn(2, 3, 32, 32)
    out = model.unet(x, torch.tensor([10, 500]))
    assert out.sample.shape == (2, 3, 32, 32) and out.variance.shape == (2, 3, 32, 32)
    torch.testing.assert_close(model(x, 500), reference.eval()(x, torch.tensor([500, 500])).sample)
    assert model.h_shape == (64, 16, 16)
    with HSpace(model.unet) as hs:  # an h edit changes the output (pitfall B10)
        hs.add(torch.ones(1, 64, 16, 16))
        edited = model(x, 500)
    assert (edited - model(x, 500)).abs().max() > 1e-3


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_outputs_and_h_match_guided_diffusions_own_unet(name, tmp_path):
    """The same seeded weights, saved as a guided-diffusion checkpoint and loaded by load_adm, give the output
    (eps and the variance channels) and h that guided-diffusion's UNetModel gave on the same inputs
    (tests/fixtures/adm_guided_diffusion.safetensors, written by scripts/adm_reference_outputs.py)."""
    from safetensors.torch import load_file

    config = CONFIGS[name]
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in ADMUNet(ADMConfig(**config)).state_dict().items()}
    path = tmp_path / "model.pt"
    torch.save(seeded_state(shapes), path)
    model = load_adm(str(path), config, SCHEDULER)
    expected = load_file(FIXTURE)
    x = inputs(config)
    for t in TIMESTEPS:
        with HSpace(model.unet, capture=True) as hs:
            out = model.unet(x, torch.full((len(x),), t))
        ours = torch.cat([out.sample, out.variance], dim=1) if out.variance is not None else out.sample
        torch.testing.assert_close(ours, expected[f"{name}/out@{t}"], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(hs.captured[0], expected[f"{name}/h@{t}"], rtol=1e-4, atol=1e-5)
    assert (expected[f"{name}/out@0"] - expected[f"{name}/out@999"]).abs().max() > 1e-3  # the timestep matters


def test_bad_checkpoints_are_one_line(tmp_path, tiny_checkpoint):
    path, _ = tiny_checkpoint
    with pytest.raises(UserError, match="no ADM checkpoint at"):
        load_adm(str(tmp_path / "none.pt"), TINY, SCHEDULER)
    with pytest.raises(UserError, match="does not fit the configured ADM architecture") as error:
        load_adm(str(path), {**TINY, "model_channels": 64}, SCHEDULER)
    assert "\n" not in str(error.value)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read"):
        load_adm(str(tmp_path / "junk.pt"), TINY, SCHEDULER)


def test_hspace_run_on_an_adm_checkpoint(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    path, _ = tiny_checkpoint
    overrides = [
        "model=adm_afhqdog256",
        f"model.weights={path}",
        "model.adm.image_size=32",
        "model.adm.model_channels=32",
        "model.adm.channel_mult=[1,2]",
        "model.adm.num_heads=2",
        "model.adm.num_head_channels=-1",
        "method.num_samples=16",
        "method.num_components=2",
        "method.oversample=2",
        "method.batch_size=8",
        "sampler.num_steps=3",
        "num_samples=1",
        "real_images=1",
        "num_directions=1",
        "edit.strengths=[0.0,1.0]",
        "logger=none",
        "metrics=none",
        f"run_dir={tmp_path / 'run'}",
        f"cache_dir={tmp_path / 'cache'}",
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        metrics = run(compose(config_name="run", overrides=overrides))
    assert metrics["method"] == "pca" and (tmp_path / "run" / "edits.safetensors").is_file()


def test_bad_checkpoint_through_hspace_run_exits_with_one_line(tiny_checkpoint, tmp_path, capsys):
    path, _ = tiny_checkpoint
    for weights, fragment in (
        (tmp_path / "none.pt", "no ADM checkpoint at"),
        (path, "does not fit the configured ADM architecture"),
    ):
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose(
                config_name="run",
                overrides=[
                    "model=adm_afhqdog256",
                    f"model.weights={weights}",
                    "logger=none",
                    "metrics=none",
                    f"run_dir={tmp_path / 'run'}",
                    f"cache_dir={tmp_path / 'cache'}",
                ],
            )
        with pytest.raises(SystemExit) as exit_:
            run(cfg)
        err = capsys.readouterr().err.strip()
        assert exit_.value.code == 2 and fragment in err and err.count("\n") == 0, err


def test_the_default_channel_multipliers_key_like_the_same_list_spelled_out():
    from hspace.identity import config_hash

    settings = {**TINY, "channel_mult": None}
    implied, spelled = ADMUNet(ADMConfig(**settings)), ADMUNet(ADMConfig(**{**TINY, "channel_mult": [1, 2, 2, 2]}))
    assert list(implied.config["channel_mult"]) == [1, 2, 2, 2]
    assert config_hash(implied.config) == config_hash(spelled.config)
    assert config_hash(spelled.config) != config_hash(ADMUNet(ADMConfig(**TINY)).config)


def randomized(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    for p in module.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return module.eval()


@pytest.mark.parametrize("heads, head_channels", [(2, -1), (4, 8)])
def test_attention_is_per_head_softmax_attention_in_the_legacy_channel_layout(heads, head_channels):
    """guided-diffusion's legacy order: the qkv output's channels are cut into one block per head, and each
    block holds that head's q, k and v one after another. Written out with torch's own attention; the other
    order (all q, then all k, then all v) gives a different output, so a switched layout would fail here."""
    from hspace.diffusion.adm import AttentionBlock

    block = randomized(AttentionBlock(32, num_heads=heads, num_head_channels=head_channels))
    x = torch.randn(2, 32, 4, 4)
    n_heads = 32 // head_channels if head_channels != -1 else heads
    ch = 32 // n_heads
    flat = x.reshape(2, 32, 16)
    normed = torch.nn.functional.group_norm(flat, 32, block.norm.weight, block.norm.bias, eps=block.norm.eps)
    qkv = torch.nn.functional.conv1d(normed, block.qkv.weight, block.qkv.bias)  # (b, 3C, T)

    def attend(q, k, v):  # (b, heads, ch, T) each -> (b, heads * ch, T)
        out = torch.nn.functional.scaled_dot_product_attention(q.transpose(2, 3), k.transpose(2, 3), v.transpose(2, 3))
        return out.transpose(2, 3).reshape(2, 32, 16)

    per_head = qkv.reshape(2, n_heads, 3 * ch, 16)
    legacy = attend(per_head[:, :, :ch], per_head[:, :, ch : 2 * ch], per_head[:, :, 2 * ch :])
    q, k, v = (part.reshape(2, n_heads, ch, 16) for part in qkv.chunk(3, dim=1))
    new_order = attend(q, k, v)

    def finish(h):
        return (flat + torch.nn.functional.conv1d(h, block.proj_out.weight, block.proj_out.bias)).reshape(x.shape)

    with torch.no_grad():
        ours = block(x)
    torch.testing.assert_close(ours, finish(legacy), rtol=1e-4, atol=1e-5)
    assert (ours - finish(new_order)).abs().max() > 1e-2


def test_timestep_embedding_is_cosines_then_sines_of_geometric_frequencies():
    from hspace.diffusion.adm import timestep_embedding

    emb = timestep_embedding(torch.tensor([0, 1, 250]), 4)
    freqs = [1.0, 10000**-0.5]  # exp(-ln(10000) * i / half) for i < half = 2
    for row, t in zip(emb, (0, 1, 250)):
        expected = [math.cos(t * f) for f in freqs] + [math.sin(t * f) for f in freqs]
        torch.testing.assert_close(row, torch.tensor(expected), rtol=1e-5, atol=1e-5)
    assert (
        timestep_embedding(torch.tensor([3]), 5).shape == (1, 5) and timestep_embedding(torch.tensor([3]), 5)[0, 4] == 0
    )


@pytest.mark.parametrize("updown", ["", "down", "up"])
def test_resblock_with_scale_shift_norm_matches_its_written_out_definition(updown):
    """out = skip(x') + conv(dropout(silu(norm(h) * (1 + scale) + shift))), h = conv(resample(silu(norm(x)))),
    x' = resample(x), (scale, shift) = linear(silu(emb)) split in two; resampling is nearest up or 2x2 mean down."""
    from hspace.diffusion.adm import ResBlock

    F = torch.nn.functional
    block = randomized(ResBlock(32, 16, 0.0, 64, use_scale_shift_norm=True, up=updown == "up", down=updown == "down"))
    x, emb = torch.randn(2, 32, 8, 8), torch.randn(2, 16)
    resample = {"": lambda t: t, "down": lambda t: F.avg_pool2d(t, 2), "up": lambda t: F.interpolate(t, scale_factor=2)}

    def norm(t, layer):
        return F.group_norm(t, 32, layer.weight, layer.bias, eps=layer.eps)

    conv_in, conv_out = block.in_layers[2], block.out_layers[3]
    h = F.conv2d(resample[updown](F.silu(norm(x, block.in_layers[0]))), conv_in.weight, conv_in.bias, padding=1)
    scale, shift = F.linear(F.silu(emb), block.emb_layers[1].weight, block.emb_layers[1].bias)[..., None, None].chunk(
        2, 1
    )
    h = F.conv2d(F.silu(norm(h, block.out_layers[0]) * (1 + scale) + shift), conv_out.weight, conv_out.bias, padding=1)
    skip = F.conv2d(resample[updown](x), block.skip_connection.weight, block.skip_connection.bias)
    with torch.no_grad():
        torch.testing.assert_close(block(x, emb), skip + h, rtol=1e-4, atol=1e-4)


def test_the_up_path_takes_its_own_number_of_heads():
    """num_heads_upsample (guided-diffusion's flag) sets the heads of the output blocks' attention; -1 keeps
    num_heads there too."""
    from hspace.diffusion.adm import AttentionBlock

    def heads(blocks):
        return {m.num_heads for m in blocks.modules() if isinstance(m, AttentionBlock)}

    config = dict(CONFIGS["other_flags"])
    model = ADMUNet(ADMConfig(**config, num_heads_upsample=4))
    assert heads(model.input_blocks) == {2} and heads(model.output_blocks) == {4}
    assert heads(ADMUNet(ADMConfig(**config)).output_blocks) == {2}
