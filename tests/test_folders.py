"""Image folders (with a labels CSV), AFHQ and LSUN (folder and LMDB) in their real layouts: read, split,
run end to end through hspace-run, and refuse bad input in one line."""

import io

import lmdb
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from hspace.cli import CONFIG_DIR
from hspace.cli.run import run
from hspace.data.folders import AFHQDataModule, ImageFolderDataModule, LMDBDataModule
from hspace.errors import UserError


def save_images(folder, names, size=40, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / name)


@pytest.fixture
def labelled_folder(tmp_path):
    root = tmp_path / "folder"
    save_images(root / "a", [f"{i}.png" for i in range(4)])
    save_images(root / "b", [f"{i}.jpg" for i in range(4)], seed=1)
    rows = ["file,smile,hat"] + [
        f"{d}/{i}.{ext},{i % 2},{-1 if i < 2 else 1}" for d, ext in (("a", "png"), ("b", "jpg")) for i in range(4)
    ]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    return root, tmp_path / "labels.csv"


@pytest.fixture
def afhq(tmp_path):
    for split in ("train", "val"):
        for c in ("cat", "dog", "wild"):
            save_images(tmp_path / "afhq" / split / c, [f"flickr_{c}_{i}.png" for i in range(2)])
    return tmp_path / "afhq"


@pytest.fixture
def lsun_lmdb(tmp_path):
    root = tmp_path / "church_outdoor_train_lmdb"
    env = lmdb.open(str(root), map_size=1 << 24)
    rng = np.random.default_rng(0)
    with env.begin(write=True) as txn:
        for i in range(6):
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)).save(buffer, format="webp")
            txn.put(f"{i:040x}".encode(), buffer.getvalue())
    env.close()
    return root


def test_image_folder_with_labels(labelled_folder):
    root, labels = labelled_folder
    data = ImageFolderDataModule(
        str(root), resolution=32, labels_csv=str(labels), val_fraction=0.25, test_fraction=0.25
    )
    assert [len(data.datasets[s]) for s in ("train", "val", "test")] == [4, 2, 2] and data.attributes == [
        "smile",
        "hat",
    ]
    item = data.datasets["train"][0]
    assert item["image"].shape == (3, 32, 32) and item["attributes"].tolist() in ([0, 0], [1, 0], [0, 1], [1, 1])


def test_labels_from_a_spreadsheet_and_macos_side_files_are_read(labelled_folder):
    root, labels = labelled_folder
    rows = labels.read_text().splitlines()
    labels.write_bytes(("\ufeff" + "file, smile, hat\n" + "\n".join(rows[1:]) + "\n").encode())  # BOM, spaces
    (root / "a" / "._0.png").write_bytes(b"AppleDouble")  # not an image: skipped
    data = ImageFolderDataModule(str(root), resolution=32, labels_csv=str(labels), val_fraction=0, test_fraction=0)
    assert data.attributes == ["smile", "hat"] and len(data.datasets["train"]) == 8
    labels.write_bytes(b"file,smile\n\xff\xfe,1\n")
    with pytest.raises(UserError, match="is not UTF-8 text"):
        ImageFolderDataModule(str(root), resolution=32, labels_csv=str(labels))


def test_the_data_identity_changes_with_any_item_label_or_file(labelled_folder, afhq, lsun_lmdb):
    """Cache keys follow the data's content: a label or an image changed in the middle of a split (not only at its
    ends) gives another identity; the same content read again gives the same one."""
    import os

    root, labels = labelled_folder

    def identity():
        return ImageFolderDataModule(str(root), 32, str(labels), val_fraction=0, test_fraction=0).identity()

    first = identity()
    assert identity() == first
    rows = labels.read_text().splitlines()
    middle = 3  # a/2.png: neither the first nor the last training image
    rows[middle] = rows[middle].replace(",0,", ",1,")
    labels.write_text("\n".join(rows) + "\n")
    relabelled = identity()
    assert relabelled != first
    image = root / "a" / "2.png"
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))  # rewritten
    touched = identity()
    assert touched != relabelled
    header, *rest = labels.read_text().splitlines()
    names = header.split(",")
    labels.write_text("\n".join([",".join([names[0], *reversed(names[1:])]), *rest]) + "\n")  # names only
    assert identity() != touched
    for build in (lambda: AFHQDataModule(str(afhq), 32), lambda: LMDBDataModule(str(lsun_lmdb), 32, 0.2, 0.2)):
        assert build().identity() == build().identity()


def test_an_lmdb_export_is_read_by_loader_workers_after_the_parent_read_it(lsun_lmdb):
    data = LMDBDataModule(str(lsun_lmdb), 32, 0.0, 0.0, batch_size=2, num_workers=2)
    data.identity()  # the parent has opened the export
    again = LMDBDataModule(str(lsun_lmdb), 32, 0.0, 0.0)  # a second datamodule over it in the same process
    assert again.identity() == data.identity()
    batches = list(data.train_dataloader())  # forked workers open their own
    assert sum(len(batch["image"]) for batch in batches) == 6


def test_afhq_and_lmdb(afhq, lsun_lmdb):
    data = AFHQDataModule(str(afhq), resolution=32)
    assert len(data.datasets["train"]) == 6 and data.attributes == ["cat", "dog", "wild"]
    item = data.datasets["val"][5]
    assert item["label"] == 2 and item["attributes"].tolist() == [0, 0, 1]
    dogs = AFHQDataModule(str(afhq), resolution=32, classes=["dog"])
    assert len(dogs.datasets["train"]) == 2
    assert AFHQDataModule(str(afhq), resolution=32, classes="dog").attributes == ["dog"]  # one name, not d, o, g
    lsun = LMDBDataModule(str(lsun_lmdb), resolution=32, val_fraction=1 / 6, test_fraction=1 / 6)
    assert [len(lsun.datasets[s]) for s in ("train", "val", "test")] == [4, 1, 1]
    assert lsun.datasets["test"][0]["image"].shape == (3, 32, 32)


def test_afhq_interleaves_its_classes_and_skips_macos_side_files(afhq):
    """The first images of a split hold every class (a method taking the first N of AFHQ's 5,153 cats would find
    no dog), and ._ files of a copy from macOS are not images."""
    (afhq / "train" / "dog" / "._flickr_dog_0.png").write_bytes(b"\x00\x05\x16\x07 resource fork")
    data = AFHQDataModule(str(afhq), resolution=32)
    train = data.datasets["train"]
    assert [train[i]["label"] for i in range(len(train))] == [0, 1, 2, 0, 1, 2]


def test_an_image_folder_follows_linked_folders_and_leaves_hidden_ones_out(tmp_path):
    root = tmp_path / "images"
    save_images(root / "real", ["a.png"])
    save_images(tmp_path / "elsewhere", ["b.png"])
    (root / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (root / "again").symlink_to(root, target_is_directory=True)  # a loop: each real folder is read once
    save_images(root / ".ipynb_checkpoints", ["a-checkpoint.png"])
    from hspace.data.folders import list_images

    assert [p.relative_to(root).as_posix() for p in list_images(root)] == ["linked/b.png", "real/a.png"]


def test_a_non_square_image_is_cropped_to_its_centre_square_not_squeezed():
    """LSUN's images are not square (the shorter side is 256): as in the DDPM and guided-diffusion codes, the
    centre square is cut out and resized. Red bands outside the centre square must not reach the image."""
    from hspace.data.image_files import image_tensor
    from hspace.images import from_pixels

    rng = np.random.default_rng(0)
    for height, width in ((40, 64), (64, 40)):
        pixels = rng.integers(0, 200, (height, width, 3), dtype=np.uint8)
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        outside = np.ones((height, width), dtype=bool)
        outside[top : top + side, left : left + side] = False
        pixels[outside] = (255, 0, 0)
        centre = Image.fromarray(np.ascontiguousarray(pixels[top : top + side, left : left + side]))
        expected = from_pixels(np.asarray(centre.resize((32, 32), Image.Resampling.BICUBIC, reducing_gap=None)))
        image = image_tensor(Image.fromarray(pixels), 32)
        assert image.shape == (3, 32, 32) and np.array_equal(image.numpy(), expected.numpy())
        assert not ((image[0] > 0.99) & (image[1] < -0.99)).any()  # no red pixel


@pytest.mark.parametrize("layout", ["image_folder", "lsun_church", "afhq", "lsun_lmdb"])
def test_hspace_run_on_each_layout(layout, labelled_folder, afhq, lsun_lmdb, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    root = {
        "image_folder": labelled_folder[0],
        "lsun_church": labelled_folder[0] / "a",
        "afhq": afhq,
        "lsun_lmdb": lsun_lmdb,
    }[layout]
    overrides = [
        f"data={layout}",
        f"data.root={root}",
        "data.resolution=32",
        "data.num_workers=0",
        "method.num_samples=32",
        "method.num_components=2",
        "method.oversample=4",
        "method.batch_size=16",
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
    if layout != "afhq":
        overrides += ["data.val_fraction=0.2", "data.test_fraction=0.2"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        metrics = run(compose(config_name="run", overrides=overrides))
    assert 0 <= metrics["inversion/mse"] and (tmp_path / "run" / "edits_real.safetensors").is_file()


def one_line_error(capsys, overrides, tmp_path, fragment):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            config_name="run",
            overrides=[
                *overrides,
                "logger=none",
                "metrics=none",
                f"run_dir={tmp_path / 'bad'}",
                f"cache_dir={tmp_path / 'cache'}",
            ],
        )
    with pytest.raises(SystemExit) as exit_:
        run(cfg)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and fragment in err and err.count("\n") == 0, err


def test_bad_input_is_one_line(labelled_folder, afhq, tmp_path, capsys):
    root, labels = labelled_folder
    one_line_error(capsys, ["data=image_folder", f"data.root={tmp_path / 'nowhere'}"], tmp_path, "no image folder at")
    (tmp_path / "empty").mkdir()
    one_line_error(
        capsys,
        ["data=image_folder", f"data.root={tmp_path / 'empty'}"],
        tmp_path,
        "holds no .png, .jpg or .webp images",
    )
    labels.write_text("file,smile\na/0.png,2\n")
    one_line_error(
        capsys,
        ["data=image_folder", f"data.root={root}", f"data.labels_csv={labels}"],
        tmp_path,
        "line 2: expected a file name and 1 values",
    )
    one_line_error(capsys, ["data=afhq", f"data.root={tmp_path / 'folder'}"], tmp_path, "no AFHQ split folder at")
    one_line_error(capsys, ["data=lsun_lmdb", f"data.root={tmp_path / 'folder'}"], tmp_path, "no LMDB export at")
    (root / "a" / "0.png").write_bytes(b"broken")
    one_line_error(
        capsys,
        [
            "data=image_folder",
            f"data.root={root}",
            "data.resolution=32",
            "data.num_workers=0",
            "real_images=8",
            "sampler.num_steps=2",
            "method.num_samples=8",
            "method.num_components=2",
            "method.oversample=2",
            "method.batch_size=8",
            "num_samples=1",
            "num_directions=1",
            "data.val_fraction=0",
            "data.test_fraction=1.0",
        ],
        tmp_path,
        "cannot read the image",
    )


def test_a_split_moves_at_most_a_file_or_two_when_the_data_grows():
    """Each file's rank is a hash of its own name: a permutation by count moved 322 of 500 test images of 10,000
    when one image was added. The names, not where the folder lies, decide the split."""
    from hspace.data.folders import split_files

    names = [f"img_{i:05d}.png".encode() for i in range(2000)]
    before = split_files(names, names, 0.05, 0.05)
    after = split_files([*names, b"img_new.png"], [*names, b"img_new.png"], 0.05, 0.05)
    moved = {part: set(before[part]) - set(after[part]) for part in ("train", "val", "test")}
    assert len(moved["train"]) <= 1 and len(moved["val"]) <= 1 and len(moved["test"]) <= 1
    assert set(before["train"]) & (set(after["test"]) | set(after["val"])) <= moved["train"]
    assert [len(before[p]) for p in ("train", "val", "test")] == [1800, 100, 100]
    other_seed = split_files(names, names, 0.05, 0.05, seed=1)
    assert set(other_seed["test"]) != set(before["test"])


def test_a_copied_image_folder_keeps_its_split(labelled_folder, tmp_path):
    import shutil

    root, _ = labelled_folder
    shutil.copytree(root, tmp_path / "copy")
    parts = [
        ImageFolderDataModule(str(folder), resolution=32, val_fraction=0.25, test_fraction=0.25)
        for folder in (root, tmp_path / "copy")
    ]
    for split in ("train", "val", "test"):
        relative = [
            [p.relative_to(folder).as_posix() for p in data.datasets[split].files]
            for data, folder in zip(parts, (root, tmp_path / "copy"))
        ]
        assert relative[0] == relative[1] and relative[0], split


def test_a_sixteen_bit_grey_image_reads_as_its_eight_bit_levels(tmp_path):
    """PIL opens a 16-bit grey PNG in mode I;16 and its RGB conversion clips every level above 255, so the image
    came out nearly white; its levels are scaled to 8 bits instead. 32-bit integer pixels have no known range
    and are refused in one line that names the file."""
    import torch

    from hspace.data.image_files import image_tensor, load_image

    levels = np.linspace(0, 255, 32 * 32).reshape(32, 32).round().astype(np.uint8)
    Image.fromarray(levels.astype(np.uint16) * 257).save(tmp_path / "grey16.png")
    with Image.open(tmp_path / "grey16.png") as image:
        assert image.mode == "I;16"
    eight_bit = image_tensor(Image.fromarray(levels).convert("RGB"), 32)
    assert torch.equal(load_image(tmp_path / "grey16.png", 32), eight_bit)

    Image.fromarray(levels.astype(np.int32) * 1000).save(tmp_path / "grey32.tiff")
    with pytest.raises(UserError, match=r"grey32.tiff: the image holds 32-bit integer pixels .*8- or 16-bit PNG"):
        load_image(tmp_path / "grey32.tiff", 32)


def test_a_datamodule_of_plain_datasets_is_told_apart_by_its_last_item_and_trains_on_one_full_batch():
    """Datasets that cannot fingerprint their items are identified by their first and last items; a training
    split of exactly one batch is enough to train on."""
    import torch

    from hspace.data.datamodule import ImageDataModule

    def items(last):
        return [{"image": torch.full((3, 4, 4), value)} for value in (0.0, 0.5, last)]

    def identity(last):
        return ImageDataModule(items(last), items(last), items(last), batch_size=3).identity()

    assert identity(1.0) == identity(1.0) != identity(-1.0)
    ImageDataModule(items(1.0), [], [], batch_size=3).check_trainable()
    with pytest.raises(UserError, match="data.batch_size=4 is more than the 3 training images"):
        ImageDataModule(items(1.0), [], [], batch_size=4).check_trainable()
