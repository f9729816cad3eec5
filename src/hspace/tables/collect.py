"""Finished runs as (config, metrics) records: from local run directories and from the W&B API."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from hspace.errors import UserError


@dataclass
class RunRecord:
    source: str  # the run directory or W&B path
    config: dict
    metrics: dict

    def value(self, key: str):
        """A metric by its name, else a config value by its dotted path; None when neither exists."""
        if key in self.metrics:
            return self.metrics[key]
        node = self.config
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node


def run_directories(paths: Iterable[str | Path]) -> list[Path]:
    """Every directory holding metrics.json and config.yaml at or below the given paths, sorted."""
    found = set()
    for path in paths:
        path = Path(path).expanduser()
        if not path.exists():
            raise UserError(
                f"no runs at {path}: give run directories or folders that contain them (each with metrics.json and "
                "config.yaml)"
            )
        candidates = [path] if (path / "metrics.json").is_file() else [p.parent for p in path.rglob("metrics.json")]
        found.update(p for p in candidates if (p / "config.yaml").is_file())
    return sorted(found)


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
    """Finished runs of a W&B project ("entity/project"), through the public API (needs a login)."""
    if api is None:
        import wandb

        try:
            api = wandb.Api(timeout=30)
        except Exception as error:
            raise UserError(
                f"cannot reach the W&B API for {path} ({error}): log in with `wandb login`, or leave wandb=null"
            ) from None
    records = []
    for run in api.runs(path, filters={"state": "finished"}):
        metrics = {k: v for k, v in dict(run.summary).items() if not k.startswith("_")}
        records.append(RunRecord(f"wandb:{path}/{run.id}", dict(run.config), metrics))
    return records
