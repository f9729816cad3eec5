"""CelebA-HQ in its real layout (a 6-image folder and an annotation file), the 40-attribute classifier
trained on it through hspace-train, and every bad-path case as one line with exit status 2."""

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from hspace.classifiers.cnn import AttributeCNN
from hspace.cli import CONFIG_DIR
from hspace.cli.train import train
from hspace.data.celebahq import ANNOTATION_FILE, CELEBA_ATTRIBUTES, IMAGE_DIR, CelebAHQDataset


def write_annotations(path, rows, count=None):
    lines = [str(len(rows) if count is None else count), " ".join(CELEBA_ATTRIBUTES)]
    lines += [f"{name} " + " ".join(str(v) for v in values) for name, values in rows]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def celebahq(tmp_path):
    root = tmp_path / "CelebAMask-HQ"
    (root / IMAGE_DIR).mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(root / IMAGE_DIR / f"{i}.jpg")
        rows.append((f"{i}.jpg", rng.choice([-1, 1], len(CELEBA_ATTRIBUTES))))
    write_annotations(root / ANNOTATION_FILE, rows)
    return root, rows


def test_dataset_reads_images_and_labels(celebahq):
    root, rows = celebahq
    splits = {
        s: CelebAHQDataset(root, s, resolution=32, val_fraction=1 / 6, test_fraction=1 / 6)
        for s in ("train", "val", "test")
    }
    assert [len(splits[s]) for s in ("train", "val", "test")] == [4, 1, 1]
    item = splits["test"][0]
    assert item["image"].shape == (3, 32, 32) and item["image"].min() >= -1 and item["image"].max() <= 1
    assert torch.equal(item["attributes"], torch.tensor(rows[5][1] > 0, dtype=torch.float32))
    assert splits["train"].attributes == list(CELEBA_ATTRIBUTES)


def test_images_converted_to_png_keep_their_labels_and_the_annotation_path_may_start_with_home(
    celebahq, tmp_path, monkeypatch
):
    """The annotation file names 0.jpg ...: an image set converted to PNG is read by number; a macOS ._ file is
    not an image; data.annotation_file=~/... is the home folder's."""
    root, rows = celebahq
    for i in range(6):
        jpg = root / IMAGE_DIR / f"{i}.jpg"
        Image.open(jpg).save(jpg.with_suffix(".png"))
        jpg.unlink()
    (root / IMAGE_DIR / "._0.png").write_bytes(b"\x00\x05\x16\x07")
    monkeypatch.setenv("HOME", str(tmp_path))
    (root / ANNOTATION_FILE).rename(tmp_path / "anno.txt")
    test = CelebAHQDataset(root, "test", 32, 1 / 6, 1 / 6, annotation_file="~/anno.txt")
    assert test.files[0].name == "5.png" and torch.equal(test[0]["attributes"], torch.tensor(rows[5][1] > 0).float())


def compose_classifier(root, run_dir, extra=()):
    overrides = [
        "experiment=celebahq_classifier",
        f"data.root={root}",
        "data.resolution=32",
        "data.batch_size=2",
        "data.num_workers=0",
        "data.val_fraction=0.17",
        "data.test_fraction=0.17",
        "module.channels=[8,8]",
        "module.hidden=16",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "trainer.enable_progress_bar=false",
        f"run_dir={run_dir}",
        *extra,
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def test_classifier_trains_on_celebahq_and_loads(celebahq, tmp_path):
    from hspace.lightning.classifier import AttributeClassifierTraining

    root, _ = celebahq
    export = train(compose_classifier(root, tmp_path / "run"))
    assert sorted(p.name for p in export.iterdir()) == sorted(AttributeClassifierTraining.exported_files)
    classifier = AttributeCNN.load(export)
    assert classifier.attributes == list(CELEBA_ATTRIBUTES)
    assert classifier.probabilities(torch.zeros(2, 3, 32, 32)).shape == (2, 40)


def expect_one_line_exit(capsys, cfg, fragment):
    with pytest.raises(SystemExit) as exit_:
        train(cfg)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and fragment in err and err.count("\n") == 0, err


def test_bad_paths_are_one_line(celebahq, tmp_path, capsys):
    root, rows = celebahq
    expect_one_line_exit(capsys, compose_classifier(tmp_path / "nowhere", tmp_path / "r1"), "no CelebA-HQ images at")
    empty = tmp_path / "empty"
    (empty / IMAGE_DIR).mkdir(parents=True)
    expect_one_line_exit(capsys, compose_classifier(empty, tmp_path / "r2"), "holds no .jpg or .png images")
    write_annotations(root / ANNOTATION_FILE, [(rows[0][0], rows[0][1][:-1]), *rows[1:]])
    expect_one_line_exit(
        capsys,
        compose_classifier(root, tmp_path / "r3"),
        f"{ANNOTATION_FILE} line 3: expected a file name and 40 values",
    )
    write_annotations(root / ANNOTATION_FILE, rows, count=7)
    expect_one_line_exit(capsys, compose_classifier(root, tmp_path / "r4"), "says 7 images on line 1 but lists 6")
    write_annotations(root / ANNOTATION_FILE, rows)
    (root / IMAGE_DIR / "0.jpg").write_bytes(b"not a jpeg")
    expect_one_line_exit(capsys, compose_classifier(root, tmp_path / "r5"), "cannot read the image")
    assert not (tmp_path / "r5" / "model").exists()  # no half-written export


@pytest.mark.parametrize("model_config", ["ddpm_celebahq256", "ddpm_church256"])
def test_hspace_run_with_a_google_layout_model_on_celebahq(celebahq, tmp_path, monkeypatch, model_config):
    """A tiny UNet in the block layout of google/ddpm-ema-*-256, saved with save_pretrained beside the google
    scheduler config, run through the real model configs on the CelebA-HQ folder layout."""
    from hspace.cli.run import run
    from hspace.diffusion.google_ddpm import save_random_model
    from tests.conftest import GOOGLE_LAYOUT

    monkeypatch.setenv("WANDB_MODE", "offline")
    root, _ = celebahq
    weights = save_random_model(tmp_path / "google_layout", GOOGLE_LAYOUT)
    overrides = [
        f"model={model_config}",
        f"model.weights={weights}",
        "data=celebahq",
        f"data.root={root}",
        "data.resolution=64",
        "data.num_workers=0",
        "data.val_fraction=0.17",
        "data.test_fraction=0.17",
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
    assert metrics["inversion/mse"] >= 0 and (tmp_path / "run" / "edits_real.safetensors").is_file()


def test_loco_paper_setting_on_a_celebahq_image_and_its_celebamask_part(celebahq, tmp_path, monkeypatch):
    """experiment=loco2024_celebahq on the real layouts: a CelebA-HQ image inverted to t_edit, its CelebAMask-HQ
    part mask at twice the model's size (reduced to it), the same image edited, locality measured in that mask."""
    from hspace.cli.run import run
    from hspace.diffusion.google_ddpm import save_random_model
    from tests.conftest import GOOGLE_LAYOUT

    monkeypatch.setenv("WANDB_MODE", "offline")
    root, _ = celebahq
    mask = np.zeros((128, 128), dtype=np.uint8)
    mask[40:64, 30:70] = 255  # the left eye's region, at CelebAMask-HQ's larger size
    (root / "CelebAMask-HQ-mask-anno" / "0").mkdir(parents=True)
    Image.fromarray(mask).save(root / "CelebAMask-HQ-mask-anno" / "0" / "00003_l_eye.png")
    weights = save_random_model(tmp_path / "google_layout", GOOGLE_LAYOUT)
    overrides = [
        "experiment=loco2024_celebahq",
        f"model.weights={weights}",
        f"data.root={root}",
        "data.resolution=64",
        "data.num_workers=0",
        "data.val_fraction=0.17",
        "data.test_fraction=0.17",
        f"method.image_file={root}/CelebA-HQ-img/3.jpg",
        f"method.mask_file={root}/CelebAMask-HQ-mask-anno/0/00003_l_eye.png",
        "method.null_rank=2",
        "method.max_iters=4",
        "method.chunk=null",
        "sampler.num_steps=4",
        "method.t_edit=500",
        "num_samples=1",
        "logger=none",
        f"run_dir={tmp_path / 'run'}",
        f"cache_dir={tmp_path / 'cache'}",
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="run", overrides=overrides)
        assert cfg.real_image_files == [f"{root}/CelebA-HQ-img/3.jpg"] and cfg.metrics.locality.region == "file"
        metrics = run(cfg)
    from safetensors.torch import load_file

    assert load_file(tmp_path / "run" / "edits_real.safetensors")["images"].shape[:3] == (1, 1, 5)
    for prefix in ("edit", "edit_real"):
        assert metrics[f"{prefix}/loco0/locality/mse_in@0"] == 0 and metrics[f"{prefix}/loco0/locality/kept_out@0"] == 1
        assert metrics[f"{prefix}/loco0/locality/mse_in@8"] > 0
    assert metrics["directions/loco0/leak_ratio"] >= 0


def test_splits_never_share_an_image_and_bad_settings_are_one_line(celebahq):
    from hspace.data.datamodule import split_sizes
    from hspace.errors import UserError

    root, _ = celebahq
    for val, test in ((0.0, 0.0), (0.2, 0.3), (0.5, 0.5), (0.0, 1.0), (0.34, 0.34)):
        splits = [CelebAHQDataset(root, s, 32, val, test).files for s in ("train", "val", "test")]
        assert sorted(sum(splits, [])) == sorted(CelebAHQDataset(root, "train", 32, 0.0, 0.0).files)  # each once
    for n in range(0, 12):  # rounding never hands out more images than there are
        for val, test in ((0.5, 0.5), (0.25, 0.75), (0.15, 0.85)):
            sizes = split_sizes(n, val, test)
            assert sum(sizes) == n and min(sizes) >= 0, (n, val, test, sizes)
    for settings, words in [
        ({"val_fraction": 0.6, "test_fraction": 0.6}, "add up to more than 1"),
        ({"val_fraction": -0.1}, "data.val_fraction=-0.1 is below 0.0"),
        ({"test_fraction": 5}, "data.test_fraction=5 is above 1.0"),
        ({"resolution": 0}, "data.resolution=0 is below 1"),
        ({"split": "validation"}, "split='validation' is not one of train, val, test"),
    ]:
        with pytest.raises(UserError, match=words):
            CelebAHQDataset(root, **{"split": "train", "resolution": 32, **settings})
