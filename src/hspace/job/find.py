"""Stage 1 of a run: its directions, from a file, the cache or the method, checked against the model."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from hspace.cache import ArtifactCache
from hspace.checks import note
from hspace.diffusion.model import DiffusionModel
from hspace.diffusion.schedule import SamplerSettings
from hspace.directions.container import FORMAT_VERSION, Directions
from hspace.directions.method import DirectionMethod
from hspace.distributed import Shard, run_across_processes
from hspace.errors import UserError
from hspace.metrics.keys import DIRECTIONS_FILE_KEY


@dataclass
class FoundDirections:
    directions: Directions
    source: str  # "this run", "the cache" or the file's path
    names: list[str]  # the directions the run edits: the first num_directions
    metrics: dict[str, float]  # what the method reported that this run logs

    @property
    def computed_here(self) -> bool:
        return self.source == "this run"


def _find_on_rank(method: DirectionMethod, model: DiffusionModel, sampler, cache, path: str) -> None:
    """One rank of find_across_processes: its own device, its share of the collection; rank 0 writes."""
    shard = Shard.current()
    model.unet.to(shard.device())
    method.place(shard.device())  # its classifier, where it has one
    directions = method.find(model, sampler, cache)
    if shard.rank == 0:
        directions.save(path)


def find_across_processes(
    method: DirectionMethod,
    model: DiffusionModel,
    sampler: SamplerSettings,
    cache: ArtifactCache | None,
    processes: int,
    gpus: Sequence[int] = (),
) -> Directions:
    """The method's directions with its collection split across `processes` ranks (hspace.distributed):
    the same directions as one process, to floating-point tolerance (up to the sign of a PCA step that sign
    alignment decides from a near-zero overlap: docs/algorithms.md, "Signs")."""
    device = model.device
    model.unet.to("cpu")  # the ranks receive the weights through shared CPU memory and move them to their device
    method.place(torch.device("cpu"))  # and the method's classifier, put back on the model's device after
    try:
        with tempfile.TemporaryDirectory(prefix="hspace-find-") as tmp:
            path = str(Path(tmp) / "directions.safetensors")
            run_across_processes(_find_on_rank, (method, model, sampler, cache, path), processes, gpus)
            return Directions.load(path)
    finally:
        model.unet.to(device)
        method.place(device)


def directions_from_method(
    method: DirectionMethod,
    model: DiffusionModel,
    sampler: SamplerSettings,
    cache: ArtifactCache | None,
    processes: int = 1,
    gpus: Sequence[int] = (),
) -> tuple[Directions, bool]:
    """The method's directions for this model and grid, and whether they came from the cache (an identical
    earlier run made them). With processes > 1, a method that collects over samples splits its collection
    across that many processes (on the GPUs `gpus` lists, where it lists them); the others run in this process."""

    def compute():
        if processes > 1 and method.collects_across_processes:
            directions = find_across_processes(method, model, sampler, cache, processes, gpus)
        else:
            if processes > 1:
                note(f"method={method.name} does not split across processes: finding its directions in one")
            directions = method.find(model, sampler, cache)
        if not isinstance(directions, Directions):
            raise UserError(
                f"method={method.name}: {type(method).__name__}.find returned a {type(directions).__name__}, not "
                "Directions: build them with self.directions(model, sampler, vectors, scales, names)"
            )
        if not directions.names:  # never cached: an empty set of directions is a failure, not a result
            raise UserError(f"method={method.name} found no directions with these settings: check its config")
        return directions

    if cache is None:
        return compute(), False
    walked = method.walked_sampler(sampler)
    parts = {
        "method": method.name,
        "config": method.identity(),
        "model": model.identity(),
        "grid": walked.walk(),
        "format": FORMAT_VERSION,
    } | method_class(method)
    seen = len(cache.hits)
    directions = cache.get("directions", parts, compute, save=lambda d, path: d.save(path), load=Directions.read)
    return directions, any(hit.startswith("directions/") for hit in cache.hits[seen:])


def method_class(method: DirectionMethod) -> dict:
    """What names a method's code in its cache key, beyond its name and settings: the class, where it is not one
    of hspace's (so a subclass of PCA that inherits its name keeps its own directions), and its `version` where
    it is not 1 (raised by whoever changes what find() computes)."""
    cls = type(method)
    named = {} if cls.__module__.startswith("hspace.") else {"class": f"{cls.__module__}.{cls.__qualname__}"}
    return named | ({"version": cls.version} if cls.version != 1 else {})


def reported_metrics(directions: Directions, names: list[str], computed_here: bool) -> dict[str, float]:
    """The method's metrics a run logs: per-direction ones (directions/<name>/...) only for the directions
    it edits, stage times (time/...) only when this run computed the directions."""
    edited = tuple(f"directions/{name}/" for name in names)
    kept = {}
    for key, value in directions.metrics.items():
        if key.startswith("time/") and not computed_here:
            continue
        if key.startswith("directions/") and not key.startswith(edited):
            continue
        kept[key] = value
    return kept


def find_stage(
    method: DirectionMethod,
    model: DiffusionModel,
    sampler: SamplerSettings,
    num_directions: int,
    cache: ArtifactCache | None,
    directions_path: str | Path | None = None,
    processes: int = 1,
    gpus: Sequence[int] = (),
) -> FoundDirections:
    if directions_path is not None:
        directions, source = Directions.load(directions_path), str(directions_path)
    else:
        directions, cached = directions_from_method(method, model, sampler, cache, processes, gpus)
        source = "the cache" if cached else "this run"
    directions.check_fits(model, sampler.schedule(model.alphas_cumprod).timesteps, f"directions from {source}")
    names = directions.names[: min(num_directions, len(directions.names))]
    if num_directions > len(names):
        note(f"num_directions={num_directions} but the directions number {len(names)}: editing all {len(names)}")
    metrics = reported_metrics(directions, names, source == "this run")
    if directions_path is not None:  # which file, by content: hspace-table keeps runs of different files apart
        from hspace.diffusion.loading import file_sha256

        metrics[DIRECTIONS_FILE_KEY] = file_sha256(Path(directions_path))[:16]
    return FoundDirections(directions, source, names, metrics)
