"""Image datasets from disk: any image folder (optionally with a CSV of labels), AFHQ, and LSUN as an
image folder or as the official LMDB export (read-only; needs the `lmdb` package).

Every item is a dict with `image` (3, R, R) in [-1, 1] (resized to `resolution`), `index`, and, where
labels exist, `attributes` (A,) in {0, 1} whose names are the dataset's `attributes`.
Layouts:

- image folder: every .png/.jpg/.jpeg/.webp below `root`, in sorted path order; labels CSV: a header
  `file,<attribute>,...` and one row per image (its path relative to root), values 0/1 or -1/1;
- AFHQ: `<root>/{train,val}/{cat,dog,wild}/*.png` (as the AFHQ release unpacks); the class is both a
  one-hot `attributes` over (cat, dog, wild) and `label`;
- LSUN LMDB: `<root>/data.mdb` of the official export (key -> encoded image, webp or jpeg).
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from hspace.checks import choice, integer
from hspace.data.datamodule import ImageDataModule, check_split_fractions, files_fingerprint, split_sizes
from hspace.data.image_files import image_tensor, load_image
from hspace.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
AFHQ_CLASSES = ("cat", "dog", "wild")


def visible_images(folder: Path) -> list[Path]:
    """The image files directly in `folder`, sorted, without hidden ones (macOS ._ files)."""
    return sorted(
        p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )


def list_images(root: Path) -> list[Path]:
    """Every image below `root` in sorted path order, through symlinked folders (each real folder once), without
    hidden files or anything below a hidden folder (.ipynb_checkpoints copies)."""
    if not root.is_dir():
        raise UserError(f"no image folder at {root}: set data.root to a folder of .png/.jpg/.webp images")
    files, seen = [], set()
    for folder, subfolders, _ in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a link back up the tree, or a second link to one folder
            subfolders[:] = []
            continue
        seen.add(real)
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        files += visible_images(Path(folder))
    files.sort()
    if not files:
        raise UserError(f"{root} holds no .png, .jpg or .webp images")
    return files


def read_label_csv(path: Path, files: list[Path], root: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """Attribute names and relative path -> labels in {0, 1} from a CSV with a `file` column."""
    if not path.is_file():
        raise UserError(f"no labels file at {path}: expected a CSV with a header 'file,<attribute>,...'")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # utf-8-sig: a spreadsheet's byte-order mark
            rows = [[value.strip() for value in row] for row in csv.reader(f)]
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text: save the labels as a UTF-8 CSV") from None
    if not rows or not rows[0] or rows[0][0] != "file" or len(rows[0]) < 2:
        raise UserError(
            f"{path} line 1 must be a header 'file,<attribute>,...', got {','.join(rows[0]) if rows else 'nothing'}"
        )
    names = rows[0][1:]
    labels = {}
    for number, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(names) + 1 or any(v.strip() not in ("0", "1", "-1") for v in row[1:]):
            raise UserError(
                f"{path} line {number}: expected a file name and {len(names)} values of 0/1 or -1/1, got "
                f"{','.join(row)}"
            )
        labels[row[0]] = (np.array([int(v) for v in row[1:]]) > 0).astype(np.float32)
    missing = [str(p.relative_to(root)) for p in files if str(p.relative_to(root)) not in labels]
    if missing:
        raise UserError(
            f"{len(missing)} images under {root} have no row in {path}, e.g. {missing[0]}: label every image or "
            "remove it"
        )
    return names, labels


class ImageFolderDataset(Dataset):
    def __init__(
        self,
        root: str | Path,
        resolution: int = 256,
        labels_csv: str | Path | None = None,
        files: list[Path] | None = None,
    ):
        self.resolution = integer(resolution, "data.resolution", 1)
        self.root = Path(root).expanduser()
        self.files = files if files is not None else list_images(self.root)
        self.attributes: list[str] = []
        self.labels: dict[str, np.ndarray] | None = None
        if labels_csv is not None:
            self.attributes, self.labels = read_label_csv(Path(labels_csv).expanduser(), self.files, self.root)

    def __len__(self) -> int:
        return len(self.files)

    def fingerprint(self) -> str:
        """Its image files (paths, sizes, modification times) and their labels."""
        keys = [str(path.relative_to(self.root)) for path in self.files]
        return files_fingerprint(self.files, None if self.labels is None else {key: self.labels[key] for key in keys})

    def __getitem__(self, index: int) -> dict:
        path = self.files[index]
        item = {"image": load_image(path, self.resolution), "index": index}
        if self.labels is not None:
            item["attributes"] = torch.from_numpy(self.labels[str(path.relative_to(self.root))])
        return item


def split_files(
    files: list, names: list[bytes], val_fraction: float, test_fraction: float, seed: int = 0
) -> dict[str, list]:
    """A fixed split of a file list into train/val/test (sizes from `split_sizes`), each part in the list's order.
    The files are ranked by a hash of the seed and each file's name (`names`: its path below the root, or its
    LMDB key): the lowest ranks are the test split, then val, then train. A file's
    rank does not depend on the others, so data that grows moves at most a file or two between splits (a
    permutation by count would move hundreds of training images into test), and a moved folder keeps its split."""
    _, n_val, n_test = split_sizes(len(files), val_fraction, test_fraction)
    rank = [hashlib.sha256(f"{seed}:".encode() + name).digest() for name in names]
    order = sorted(range(len(files)), key=rank.__getitem__)
    pick = lambda idx: [files[i] for i in sorted(idx)]  # noqa: E731
    return {
        "test": pick(order[:n_test]),
        "val": pick(order[n_test : n_test + n_val]),
        "train": pick(order[n_test + n_val :]),
    }


class ImageFolderDataModule(ImageDataModule):
    """Any image folder (LSUN church/bedroom as folders included), split by a seeded hash of each file's path
    (split_files)."""

    def __init__(
        self,
        root: str,
        resolution: int = 256,
        labels_csv: str | None = None,
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        seed: int = 0,
        batch_size: int = 16,
        num_workers: int = 0,
    ):
        check_split_fractions(val_fraction, test_fraction)  # before the folder is listed
        integer(seed, "data.seed", 0)
        root_path = Path(root).expanduser()
        files = list_images(root_path)
        names = [f.relative_to(root_path).as_posix().encode() for f in files]
        splits = split_files(files, names, val_fraction, test_fraction, seed)
        datasets = {
            name: ImageFolderDataset(root_path, resolution, labels_csv, files) for name, files in splits.items()
        }
        super().__init__(datasets["train"], datasets["val"], datasets["test"], batch_size, num_workers)
        self.attributes = datasets["train"].attributes
        self.resolution = resolution


class AFHQDataset(Dataset):
    def __init__(
        self, root: str | Path, split: str = "train", resolution: int = 256, classes: tuple[str, ...] = AFHQ_CLASSES
    ):
        choice(split, "split", ("train", "val"))
        integer(resolution, "data.resolution", 1)
        base = Path(root).expanduser() / split
        if not base.is_dir():
            raise UserError(
                f"no AFHQ split folder at {base}: set data.root to the folder holding train/ and val/, each with "
                f"{'/, '.join(AFHQ_CLASSES)}/"
            )
        self.classes = list(classes)
        per_class = []
        for label, name in enumerate(self.classes):
            folder = base / name
            if not folder.is_dir():
                raise UserError(f"no AFHQ class folder at {folder}: expected {base}/{{{','.join(self.classes)}}}/")
            found = visible_images(folder)
            if not found:
                raise UserError(f"{folder} holds no .png or .jpg images")
            per_class.append([(p, label) for p in found])
        # the classes interleaved, so that the first images of the split (what a method or a run takes the first
        # N of) hold every class, not only cats
        self.files = [item for group in itertools.zip_longest(*per_class) for item in group if item is not None]
        self.resolution = resolution
        self.attributes = list(self.classes)

    def __len__(self) -> int:
        return len(self.files)

    def fingerprint(self) -> str:
        """Its image files (paths, sizes, modification times; a file's class is its folder)."""
        return files_fingerprint([path for path, _ in self.files])

    def __getitem__(self, index: int) -> dict:
        path, label = self.files[index]
        onehot = torch.zeros(len(self.classes))
        onehot[label] = 1
        return {"image": load_image(path, self.resolution), "attributes": onehot, "label": label, "index": index}


class AFHQDataModule(ImageDataModule):
    """AFHQ: train from `train/`, validation and test both from `val/` (the release has no test split)."""

    def __init__(
        self,
        root: str,
        resolution: int = 256,
        classes: list[str] | None = None,
        batch_size: int = 16,
        num_workers: int = 0,
    ):
        classes = (classes,) if isinstance(classes, str) else tuple(classes or AFHQ_CLASSES)  # "dog": one class
        train, val = AFHQDataset(root, "train", resolution, classes), AFHQDataset(root, "val", resolution, classes)
        super().__init__(train, val, val, batch_size, num_workers)
        self.attributes = list(classes)
        self.resolution = resolution


_ENVIRONMENTS: dict[str, object] = {}


def lmdb_environment(root: Path):
    """The read-only environment of an LMDB export, one per export and process: LMDB refuses to open one twice
    in a process (two datamodules over the same export, e.g. the run's and the FID reference's)."""
    import lmdb

    key = str(root.resolve())
    if key not in _ENVIRONMENTS:
        _ENVIRONMENTS[key] = lmdb.open(key, readonly=True, lock=False, readahead=False, meminit=False, max_readers=32)
    return _ENVIRONMENTS[key]


def close_inherited_environments() -> None:
    """In a forked child (a DataLoader worker): an environment must not cross a fork, and LMDB would refuse to
    open the export again while the inherited one is registered, so the child closes them and opens its own."""
    for environment in _ENVIRONMENTS.values():
        environment.close()
    _ENVIRONMENTS.clear()


os.register_at_fork(after_in_child=close_inherited_environments)


class LMDBImageDataset(Dataset):
    """Read-only images of an LMDB export (the official LSUN format: key -> encoded image bytes)."""

    def __init__(self, root: str | Path, resolution: int = 256, keys: list[bytes] | None = None):
        try:
            import lmdb  # noqa: F401 (opened by lmdb_environment; checked here, before any work)
        except ModuleNotFoundError:
            raise UserError(
                "reading an LMDB export needs the lmdb package: pip install lmdb, or export the images to a folder"
            ) from None
        integer(resolution, "data.resolution", 1)
        self.root = Path(root).expanduser()
        if not (self.root / "data.mdb").is_file():
            raise UserError(f"no LMDB export at {self.root}: expected data.mdb (and lock.mdb) from the LSUN download")
        self.resolution = resolution
        if keys is None:  # the whole export (a split of it may be empty: val_fraction=0)
            with lmdb_environment(self.root).begin(write=False) as txn:  # the keys alone: no image is read
                keys = list(txn.cursor().iternext(keys=True, values=False))
            if not keys:
                raise UserError(f"the LMDB export at {self.root} holds no images")
        self.keys = keys

    def env(self):
        return lmdb_environment(self.root)

    def __len__(self) -> int:
        return len(self.keys)

    def fingerprint(self) -> str:
        """Its keys and the export's data file (size, modification time)."""
        keys = hashlib.sha256(b"\0".join(self.keys)).hexdigest()
        return f"{keys[:32]}:{files_fingerprint([self.root / 'data.mdb'])}"

    def __getitem__(self, index: int) -> dict:
        import io

        from PIL import Image, UnidentifiedImageError

        with self.env().begin(write=False) as txn:
            data = txn.get(self.keys[index])
        try:
            with Image.open(io.BytesIO(data)) as image:
                return {"image": image_tensor(image, self.resolution), "index": index}
        except (OSError, UnidentifiedImageError) as error:
            raise UserError(f"cannot decode the image under key {self.keys[index]!r} in {self.root}: {error}") from None
        except UserError as error:
            raise UserError(f"the image under key {self.keys[index]!r} in {self.root}: {error}") from None


class LMDBDataModule(ImageDataModule):
    def __init__(
        self,
        root: str,
        resolution: int = 256,
        val_fraction: float = 0.01,
        test_fraction: float = 0.01,
        seed: int = 0,
        batch_size: int = 16,
        num_workers: int = 0,
    ):
        check_split_fractions(val_fraction, test_fraction)  # before the keys are listed
        integer(seed, "data.seed", 0)
        keys = LMDBImageDataset(root, resolution).keys
        splits = split_files(keys, list(keys), val_fraction, test_fraction, seed)
        datasets = {name: LMDBImageDataset(root, resolution, part) for name, part in splits.items()}
        super().__init__(datasets["train"], datasets["val"], datasets["test"], batch_size, num_workers)
        self.attributes: list[str] = []
        self.resolution = resolution
