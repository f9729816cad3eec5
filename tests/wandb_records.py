"""Reading back an offline W&B run file (run-*.wandb) for tests: a LevelDB-style log of protobuf Records."""

from __future__ import annotations

import json
import time
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32768
HEADER = 7  # ":W&B", magic, version


def records(path: Path):
    data = Path(path).read_bytes()
    pos, pending = HEADER, b""
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # block trailer padding
            pos += BLOCK - pos % BLOCK
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def wait_for_exit(path: Path, timeout: float = 30.0) -> None:
    """Wait until the run file ends with its exit record: W&B's writer may still be flushing the last records
    when `wandb.finish()` has returned (seen on a loaded machine)."""
    deadline = time.monotonic() + timeout
    while not ended(path):
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} has no exit record after {timeout} s")
        time.sleep(0.2)


def ended(path: Path) -> bool:
    try:
        return any(record.WhichOneof("record_type") == "exit" for record in records(path))
    except Exception:  # a record still being written does not parse yet
        return False


def latest_items(path: Path, kind: str) -> dict:
    """Every key of the run's records of `kind` (history: what was logged; summary: the run's summary) with its
    latest value."""
    wait_for_exit(path)
    values = {}
    for record in records(path):
        if record.WhichOneof("record_type") == kind:
            items = record.history.item if kind == "history" else record.summary.update
            for item in items:
                values[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return values


def history(path: Path) -> dict:
    """Every logged key with the last value logged for it."""
    return latest_items(path, "history")


def summary(path: Path) -> dict:
    """The run's summary, each key's latest value."""
    return latest_items(path, "summary")


def run_settings(path: Path) -> dict:
    """The run's group, job type, tags and config (every key of its config updates)."""
    wait_for_exit(path)
    settings = {"group": None, "job_type": None, "tags": [], "config": {}}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            settings |= {"group": run.run_group, "job_type": run.job_type, "tags": list(run.tags)}
            settings["config"] |= {item.key: json.loads(item.value_json) for item in run.config.update}
        elif kind == "config":
            settings["config"] |= {item.key: json.loads(item.value_json) for item in record.config.update}
    return settings


def exit_code(path: Path) -> int:
    """The exit code the run file's exit record holds (W&B marks a run with a non-zero one failed)."""
    wait_for_exit(path)
    return next(record.exit.exit_code for record in records(path) if record.WhichOneof("record_type") == "exit")
