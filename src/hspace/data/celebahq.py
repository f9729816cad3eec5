"""CelebA-HQ (30,000 faces) with the 40 CelebA attributes of the CelebAMask-HQ release.

Expected layout (as the CelebAMask-HQ archive unpacks):

    <root>/CelebA-HQ-img/0.jpg ... 29999.jpg
    <root>/CelebAMask-HQ-attribute-anno.txt

The annotation file: line 1 the number of images, line 2 the 40 attribute names, then one line per image:
`<file name> <40 values of -1 or 1>`. Items are dicts: `image` (3, R, R) in [-1, 1] resized to
`resolution`, `attributes` (40,) in {0, 1}, `index`. Splits are contiguous ranges of the images in
numeric order: the last `test_fraction` is test, the `val_fraction` before it validation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from hspace.checks import choice, integer
from hspace.data.datamodule import ImageDataModule, check_split_fractions, files_fingerprint, split_sizes
from hspace.data.image_files import load_image
from hspace.errors import UserError

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips", "Big_Nose",
    "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses",
    "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes",
    "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks", "Sideburns", "Smiling",
    "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace",
    "Wearing_Necktie", "Young",
)  # fmt: skip
IMAGE_DIR = "CelebA-HQ-img"
ANNOTATION_FILE = "CelebAMask-HQ-attribute-anno.txt"


def read_attribute_file(path: str | Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """(attribute names, file name -> attributes in {0, 1}) from a CelebA-style annotation file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(
            f"no attribute annotation file at {path}: expected {ANNOTATION_FILE} from the CelebAMask-HQ release"
        )
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text: use the annotation file of the CelebAMask-HQ release") from None
    expected = (
        "line 1: the image count; line 2: the attribute names; then '<file> <one value of -1 or 1 per attribute>'"
    )
    if len(lines) < 2 or not lines[0].strip().isdigit():
        raise UserError(f"{path} line 1 is not an image count ({expected})")
    names = lines[1].split()
    labels = {}
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != len(names) + 1 or any(v not in ("-1", "1") for v in fields[1:]):
            raise UserError(
                f"{path} line {number}: expected a file name and {len(names)} values of -1 or 1, got {len(fields)} "
                f"fields ({expected})"
            )
        labels[fields[0]] = (np.array(fields[1:], dtype=np.int8) > 0).astype(np.float32)
    if len(labels) != int(lines[0]):
        raise UserError(
            f"{path} says {int(lines[0])} images on line 1 but lists {len(labels)}: the file is truncated or malformed"
        )
    return names, labels


class CelebAHQDataset(Dataset):
    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        resolution: int = 256,
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        annotation_file: str | Path | None = None,
    ):
        choice(split, "split", ("train", "val", "test"))
        integer(resolution, "data.resolution", 1)
        check_split_fractions(val_fraction, test_fraction)  # before any file is read
        root = Path(root).expanduser()
        image_dir = root / IMAGE_DIR
        if not image_dir.is_dir():
            raise UserError(
                f"no CelebA-HQ images at {image_dir}: set data.root to the folder holding {IMAGE_DIR}/ and "
                f"{ANNOTATION_FILE}"
            )
        files = sorted(
            (
                p
                for p in image_dir.iterdir()
                if p.suffix.lower() in (".jpg", ".jpeg", ".png") and not p.name.startswith(".")  # macOS ._ files
            ),
            key=lambda p: (len(p.stem), p.stem),
        )
        if not files:
            raise UserError(f"{image_dir} holds no .jpg or .png images: expected 0.jpg ... 29999.jpg")
        self.attributes, named = read_attribute_file(annotation_file or root / ANNOTATION_FILE)
        # by number: the annotation file names 0.jpg ..., the images may have been converted (0.png, 0.JPG)
        labels = {Path(name).stem: value for name, value in named.items()}
        missing = [p.name for p in files if p.stem not in labels]
        if missing:
            raise UserError(
                f"{len(missing)} images of {image_dir} have no line in the annotation file, e.g. {missing[0]}: use "
                "the annotation file of this image set"
            )
        n = len(files)
        n_train, n_val, _ = split_sizes(n, val_fraction, test_fraction)
        ranges = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n)}
        start, stop = ranges[split]
        self.files = files[start:stop]
        self.labels = labels
        self.resolution, self.split = resolution, split

    def __len__(self) -> int:
        return len(self.files)

    def fingerprint(self) -> str:
        """Its image files (names, sizes, modification times) and their labels."""
        return files_fingerprint(self.files, {p.name: self.labels[p.stem] for p in self.files})

    def __getitem__(self, index: int) -> dict:
        path = self.files[index]
        return {
            "image": load_image(path, self.resolution),
            "attributes": torch.from_numpy(self.labels[path.stem]),
            "index": index,
        }


class CelebAHQDataModule(ImageDataModule):
    def __init__(
        self,
        root: str,
        resolution: int = 256,
        batch_size: int = 16,
        num_workers: int = 0,
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        annotation_file: str | None = None,
    ):
        splits = [
            CelebAHQDataset(root, split, resolution, val_fraction, test_fraction, annotation_file)
            for split in ("train", "val", "test")
        ]
        super().__init__(*splits, batch_size=batch_size, num_workers=num_workers)
        self.attributes = splits[0].attributes
        self.resolution = resolution
