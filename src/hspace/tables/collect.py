"""Finished runs as (config, metrics) records: from local run directories and from the W&B API."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from hspace.checks import note
from hspace.errors import UserError


@dataclass
class RunRecord:
    source: str  # the run directory or W&B path
    config: dict
    metrics: dict

    def value(self, key: str):
        """A metric by its name, else a config value by its dotted path; None when neither exists."""
        return self.metrics[key] if key in self.metrics else self.lookup(key)[1]

    def has(self, key: str) -> bool:
        """Whether `key` names a metric or a config value of this run (a value of null counts)."""
        return key in self.metrics or self.lookup(key)[0]

    def lookup(self, key: str) -> tuple[bool, object]:
        """(found, value) of the config value at the dotted path `key` (W&B configs hold the dotted keys flat)."""
        if key in self.config:
            return True, self.config[key]
        node = self.config
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return False, None
            node = node[part]
        return True, node


def run_directories(paths: Iterable[str | Path]) -> list[Path]:
    """Every finished run (a directory holding metrics.json and config.yaml) at or below the given paths,
    sorted; runs marked failed or still running (killed) in their run_info.json are skipped with a note."""
    paths = [Path(path).expanduser() for path in paths]
    found = set()
    for path in paths:
        if not path.exists():
            raise UserError(
                f"no runs at {path}: give run directories or folders that contain them (each with metrics.json and "
                "config.yaml)"
            )
        candidates = [path] if (path / "metrics.json").is_file() else [p.parent for p in path.rglob("metrics.json")]
        found.update(p for p in candidates if (p / "config.yaml").is_file())
        for info in [path / "run_info.json"] if (path / "run_info.json").is_file() else path.rglob("run_info.json"):
            status = read_status(info)
            if status.get("status") == "failed":
                note(f"skipping the failed run {info.parent}: {status.get('reason', 'no reason recorded')}")
            elif status.get("status") == "running":
                note(f"skipping the unfinished run {info.parent}: it is still running or was killed")
            else:
                continue
            found.discard(info.parent)
    if not found:
        raise UserError(
            f"no finished runs under {', '.join(str(p) for p in paths)}: point runs=[...] at hspace-run output "
            "directories (outputs/run, multirun/run, or a run_dir), each with metrics.json and config.yaml"
        )
    return sorted(found)


def read_status(path: Path) -> dict:
    """A run's run_info.json, or {} when it cannot be read."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def local_runs(paths: Iterable[str | Path]) -> list[RunRecord]:
    records = []
    for directory in run_directories(paths):
        try:
            metrics = json.loads((directory / "metrics.json").read_text())
            config = OmegaConf.to_container(OmegaConf.load(directory / "config.yaml"), resolve=False)
        except Exception as error:  # a damaged file names itself, and the table is not half-built
            raise UserError(f"cannot read the run at {directory}: {error}") from None
        records.append(RunRecord(str(directory), config, metrics))
    return records


def wandb_runs(path: str, api=None) -> list[RunRecord]:
    """The finished hspace-run runs of a W&B project ("entity/project"), through the public API (needs a login):
    not trainings (job type train), nor runs that failed."""
    if api is None:
        import wandb

        try:
            api = wandb.Api(timeout=30)
        except Exception as error:
            raise UserError(
                f"cannot reach the W&B API for {path} ({error}): log in with `wandb login`, or leave wandb=null"
            ) from None
    records = []
    for run in api.runs(path, filters={"state": "finished", "jobType": "run"}):
        metrics = {k: v for k, v in dict(run.summary).items() if not k.startswith("_")}
        # the config as config.yaml holds it: without the chosen options (choice/<group>) and W&B's own keys
        config = {k: v for k, v in dict(run.config).items() if not k.startswith(("_", "choice/"))}
        records.append(RunRecord(f"wandb:{path}/{run.id}", config, metrics))
    return records
