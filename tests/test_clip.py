"""The CLIP zero-shot classifier on a tiny randomly initialised CLIP saved in the real format."""

import json
import string

import pytest
import torch
from hydra import compose, initialize_config_dir
from transformers import AutoTokenizer, CLIPConfig, CLIPModel

from hspace.classifiers.clip import CLIPZeroShot
from hspace.cli import CONFIG_DIR
from hspace.cli.run import run
from hspace.errors import UserError

PROMPTS = {"smile": ["A smiling person", "A person"], "hat": ["A person wearing a hat", "A person"]}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny_clip")
    letters = list(string.ascii_lowercase)
    vocab = {t: i for i, t in enumerate(letters + [c + "</w>" for c in letters] + ["<|startoftext|>", "<|endoftext|>"])}
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    special = dict(
        bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"]
    )
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=32,
            **special,
        ),
        vision_config=dict(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
        ),
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(directory)
    return directory


def test_probabilities_match_clips_own_pairwise_softmax(tiny_clip):
    classifier = CLIPZeroShot.load(str(tiny_clip), PROMPTS)
    assert classifier.attributes == ["smile", "hat"]
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    p = classifier.probabilities(images)
    assert p.shape == (4, 2) and ((p > 0) & (p < 1)).all()
    # The slow way: transformers' forward over all four prompts, then a softmax within each pair.
    model = CLIPModel.from_pretrained(tiny_clip)
    tokens = AutoTokenizer.from_pretrained(tiny_clip)(
        [t for pair in PROMPTS.values() for t in pair], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        logits = model(
            input_ids=tokens["input_ids"],
            attention_mask=tokens["attention_mask"],
            pixel_values=classifier.preprocess(images),
        ).logits_per_image
    torch.testing.assert_close(p, logits.view(4, 2, 2).softmax(-1)[..., 0], rtol=1e-4, atol=1e-5)


def test_resizes_larger_images(tiny_clip):
    classifier = CLIPZeroShot.load(str(tiny_clip), PROMPTS)
    assert classifier.preprocess(torch.zeros(2, 3, 64, 48)).shape == (2, 3, 32, 32)


def test_missing_model_and_bad_prompts_are_one_line(tmp_path, tiny_clip):
    with pytest.raises(UserError, match="not found") as error:
        CLIPZeroShot.load(str(tmp_path / "none"), PROMPTS)
    assert "\n" not in str(error.value)
    with pytest.raises(UserError, match="pair"):
        CLIPZeroShot.load(str(tiny_clip), {"smile": ["only one"]})


def test_hspace_run_scores_edits_with_clip(tmp_path, tiny_clip, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    overrides = [
        "method.num_samples=32",
        "method.num_components=2",
        "method.oversample=4",
        "method.batch_size=16",
        "sampler.num_steps=3",
        "num_samples=2",
        "real_images=0",
        "num_directions=1",
        "edit.strengths=[-2.0,2.0]",
        "logger=none",
        "metrics=clip_celebahq",
        f"metrics.classifier.source={tiny_clip}",
        "metrics.fid.backend=none",
        f"run_dir={tmp_path / 'run'}",
        f"cache_dir={tmp_path / 'cache'}",
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="run", overrides=overrides)
    metrics = run(cfg)  # the paper's five prompt pairs
    assert metrics["edit/pc0/target"].lstrip("-") in ("smile", "glasses", "old", "male", "hat")
    assert 0 <= metrics["edit/pc0/preserve"] <= 1 and "edit/score_delta/pc0/hat@-2" in metrics
    assert not any(k.startswith("fid/") for k in metrics)


def test_preprocessing_matches_clips_own_image_processor(tiny_clip):
    """Against transformers' CLIPImageProcessor on a 48x64 image of ramps: [-1, 1] to [0, 1], the shortest side
    resized, the centre cropped (an off-centre crop or swapped sides would shift the ramps), and normalised
    (exactly, on a constant image)."""
    from transformers import CLIPImageProcessor

    classifier = CLIPZeroShot.load(str(tiny_clip), PROMPTS)
    size, mean, std = classifier.image_size, classifier.mean.flatten(), classifier.std.flatten()
    ramp_x, ramp_y = torch.linspace(-1, 1, 64).expand(48, 64), torch.linspace(-1, 1, 48)[:, None].expand(48, 64)
    uint8 = ((torch.stack([ramp_x, ramp_y, ramp_x * ramp_y]) + 1) * 127.5).round().to(torch.uint8)
    processor = CLIPImageProcessor(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        image_mean=mean.tolist(),
        image_std=std.tolist(),
        do_convert_rgb=False,
    )
    theirs = processor(images=uint8.permute(1, 2, 0).numpy(), return_tensors="pt").pixel_values
    ours = classifier.preprocess(uint8[None].float() / 127.5 - 1)
    assert ours.shape == theirs.shape == (1, 3, size, size)
    assert (ours - theirs).abs().max() < 0.02  # PIL's bicubic against torch's, in normalised units
    constant = classifier.preprocess(torch.full((1, 3, 48, 64), 0.5))
    torch.testing.assert_close(constant, ((0.75 - mean) / std).view(1, 3, 1, 1).expand(1, 3, size, size))
