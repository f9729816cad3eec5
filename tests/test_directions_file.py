import pytest
import torch

from hspace.cache import ArtifactCache
from hspace.diffusion.schedule import make_schedule
from hspace.directions.container import Directions
from hspace.errors import UserError


@pytest.fixture
def directions():
    schedule = make_schedule(torch.linspace(0.9999, 0.01, 1000).double(), 4)
    g = torch.Generator().manual_seed(0)
    return Directions(
        vectors=torch.randn(3, 4, 8, 2, 2, generator=g),
        scales=torch.rand(3, 4, generator=g),
        timesteps=schedule.timesteps,
        names=["pc0", "pc1", "pc2"],
        method="pca",
        model_id="tiny",
        weight_hash="ab" * 32,
        sampler={"num_steps": 4, "spacing": "leading", "final_alpha": "one", "eta": 1.0},
        config={"num_components": 3},
        extra={"normal_x": torch.ones(3, 5)},
        info={"explained_variance_ratio": [[0.5] * 4] * 3},
    )


def test_round_trip(directions, tmp_path):
    loaded = Directions.load(directions.save(tmp_path / "d.safetensors"))
    for name in ("vectors", "scales", "timesteps"):
        assert torch.equal(getattr(loaded, name), getattr(directions, name))
    assert torch.equal(loaded.extra["normal_x"], directions.extra["normal_x"])
    assert loaded.metadata() == directions.metadata()


def test_incompatible_files_are_refused_in_one_line(directions):
    ok = dict(weight_hash="ab" * 32, h_shape=(8, 2, 2), timesteps=directions.timesteps)
    directions.check_compatible(**ok)
    for bad, pattern in [
        ({"weight_hash": "cd" * 32}, "made for model tiny"),
        ({"h_shape": (512, 8, 8)}, "h shape"),
        ({"timesteps": make_schedule(torch.linspace(0.9999, 0.01, 1000).double(), 10).timesteps}, "4-step grid"),
    ]:
        with pytest.raises(UserError, match=pattern) as error:
            directions.check_compatible(**{**ok, **bad})
        assert "\n" not in str(error.value)


def test_a_file_whose_parts_disagree_is_one_line(directions, tmp_path):
    """Names that are not a list, and an extra tensor without a row per direction, are refused on load (an edit
    would otherwise index past them)."""
    import json

    from safetensors.torch import load_file, save_file

    path = directions.save(tmp_path / "d.safetensors")
    tensors = load_file(path)
    meta = directions.metadata()
    for changed, bad_meta, pattern in [
        ({}, {"names": "ab"}, "are not a list of direction names"),
        ({"extra.normal_x": torch.ones(2, 5)}, {}, "extra tensor normal_x of shape \\(2, 5\\) has no row for each"),
    ]:
        save_file({**tensors, **changed}, tmp_path / "bad.safetensors", {"hspace": json.dumps({**meta, **bad_meta})})
        with pytest.raises(UserError, match=pattern) as error:
            Directions.load(tmp_path / "bad.safetensors")
        assert "\n" not in str(error.value)


def test_missing_and_damaged_files_are_clear(directions, tmp_path):
    with pytest.raises(UserError, match="no directions file"):
        Directions.load(tmp_path / "none.safetensors")
    path = directions.save(tmp_path / "d.safetensors")
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(UserError, match="not a readable hspace directions file"):
        Directions.load(path)


def test_cache_computes_once_and_recomputes_a_truncated_entry(directions, tmp_path):
    cache = ArtifactCache(tmp_path / "cache")
    calls = []

    def compute():
        calls.append(1)
        return directions

    def get():
        return cache.get(
            "directions", {"method": "pca", "k": 3}, compute, save=lambda d, p: d.save(p), load=Directions.load
        )

    first = get()
    second = get()
    assert len(calls) == 1 and torch.equal(first.vectors, second.vectors)
    assert len(cache.hits) == 1 and len(cache.misses) == 1
    (entry,) = (tmp_path / "cache" / "directions").glob("*.safetensors")
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    third = get()
    assert len(calls) == 2 and torch.equal(third.vectors, directions.vectors)
    assert Directions.load(entry).names == directions.names  # the entry was rewritten whole
    other = cache.get(
        "directions", {"method": "pca", "k": 4}, compute, save=lambda d, p: d.save(p), load=Directions.load
    )
    assert len(calls) == 3 and other is directions


def test_a_disk_error_keeps_the_cached_directions_and_stops_the_run(directions, tmp_path, monkeypatch):
    """A read that fails on the disk (EIO) is not the entry's fault: the run stops in one line and the entry stays,
    while a damaged entry is discarded (above)."""
    import errno

    import hspace.directions.container

    cache = ArtifactCache(tmp_path / "cache")

    def get():
        return cache.get("directions", {"k": 1}, lambda: directions, lambda d, p: d.save(p), Directions.read)

    get()

    def failing_disk(path):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(hspace.directions.container, "load_file", failing_disk)
    with pytest.raises(UserError, match="cannot read the cache entry .* \\(Input/output error\\): check the disk"):
        get()
    assert len(list((tmp_path / "cache" / "directions").glob("*.safetensors"))) == 1


def test_a_failed_write_leaves_no_entry(directions, tmp_path):
    cache = ArtifactCache(tmp_path / "cache")

    def broken_save(value, path):
        from hspace.files import atomic_write_bytes

        def write(f):
            f.write(b"partial")
            raise KeyboardInterrupt

        atomic_write_bytes(path, write)

    with pytest.raises(KeyboardInterrupt):
        cache.get("directions", {"k": 1}, lambda: directions, broken_save, Directions.load)
    assert [p.name for p in (tmp_path / "cache" / "directions").iterdir() if not p.name.endswith(".lock")] == []


def test_paths_expand_home_and_a_folder_or_bad_metadata_is_one_line(directions, tmp_path, monkeypatch):
    import json

    from safetensors.torch import save_file

    monkeypatch.setenv("HOME", str(tmp_path))
    saved = directions.save("~/d.safetensors")
    assert saved == tmp_path / "d.safetensors" and Directions.load("~/d.safetensors").names == directions.names
    with pytest.raises(UserError, match="is a folder"):
        directions.save(tmp_path)
    tensors = {"directions": directions.vectors, "scales": directions.scales, "timesteps": directions.timesteps}
    for meta in ({"names": ["a"]}, None, {**directions.metadata(), "names": ["only one"]}):
        save_file(tensors, tmp_path / "bad.safetensors", metadata={"hspace": json.dumps(meta)})
        with pytest.raises(UserError, match="not a readable hspace directions file"):
            Directions.load(tmp_path / "bad.safetensors")


def test_a_run_along_a_directions_file_records_the_file_by_content(model, tmp_path):
    """find_stage with directions_path reports the file's content hash, which hspace-table uses to keep runs of
    different files apart; a run that finds its own reports none."""
    from hspace.diffusion.loading import file_sha256
    from hspace.diffusion.schedule import SamplerSettings
    from hspace.directions.pca import PCA
    from hspace.job.find import find_stage
    from hspace.metrics.keys import DIRECTIONS_FILE_KEY

    sampler = SamplerSettings(num_steps=3)
    found = find_stage(PCA(num_samples=4, num_components=2, exact_max_n=100), model, sampler, 2, None)
    assert DIRECTIONS_FILE_KEY not in found.metrics
    path = found.directions.save(tmp_path / "directions.safetensors")
    again = find_stage(PCA(), model, sampler, 2, None, directions_path=path)
    assert again.metrics[DIRECTIONS_FILE_KEY] == file_sha256(path)[:16]


def test_directions_fit_only_their_models_noise_schedule_and_grid_and_keep_them_through_a_file(
    model, v_model, tmp_path
):
    """check_fits: the same weights under another prediction type, or another grid of as many steps, are
    refused in one line; the file keeps the noise schedule it was found under."""
    from hspace.diffusion.schedule import SamplerSettings

    leading = SamplerSettings(num_steps=4).schedule(model.alphas_cumprod).timesteps
    trailing = SamplerSettings(num_steps=4, spacing="trailing").schedule(model.alphas_cumprod).timesteps
    found = Directions(
        vectors=torch.zeros(1, 4, *model.h_shape),
        scales=torch.ones(1, 4),
        timesteps=leading,
        names=["d"],
        method="pca",
        model_id="tiny",
        weight_hash=model.weights_identity,
        sampler={"num_steps": 4, "spacing": "leading", "final_alpha": "one", "eta": 0.0},
        noise_schedule=model.noise_schedule,
    )
    found.check_fits(model, leading)
    assert v_model.weights_identity == model.weights_identity
    with pytest.raises(UserError, match="were found under schedule .*, prediction_type epsilon"):
        found.check_fits(v_model, leading)
    with pytest.raises(UserError, match="belong to a 4-step grid"):
        found.check_fits(model, trailing)
    assert Directions.load(found.save(tmp_path / "d.safetensors")).noise_schedule == model.noise_schedule
