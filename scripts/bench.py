"""hspace's performance as ratios measured in one run on one device (P1-P6), printed as a Markdown table and
written as JSON. Run it with nothing else on the machine: every number is a wall time.

  P1  shift-edit pipeline (8 samples x 5 strengths x 50 steps, hooks on) against a plain diffusers DDIMScheduler
      loop over the same UNet, batch and steps with no hooks: throughput ratio, goal >= 0.97
  P2  Jacobian block subspace iteration against sequential power iteration at equal accuracy, k = 1, 3, 8:
      speed-up, goal >= 3
  P3  a sweep of 5 strength settings through `hspace-run -m` with the cache against one discovery and 5 edit passes
      in one process: time ratio, goal <= 1.1
  P4  PCA collection peak memory at 10 N against N (scripts/bench_pca_memory.py): ratio, goal <= 1.2
  P5  all strengths of a sample in one batch against one strength at a time: speed-up (no goal)
  P6  the default main job: wall time and its stages (no goal)
  P7  two equal jobs of a sweep run in parallel (`hydra/launcher=joblib n_jobs=2`, each with cpu_count / 2
      threads) against the same sweep one job after the other: time ratio, goal <= 1.15; beside it, the same two
      jobs started at once as plain processes with torch's default threads (the fight the split prevents)

    python scripts/bench.py                        # all, on CUDA when available
    python scripts/bench.py --only P1 P5 --json bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from hspace.checks import output_path
from hspace.child_process import run_to_end
from hspace.cli import user_errors_exit
from hspace.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
HSPACE_RUN = str(Path(sys.executable).parent / "hspace-run")
GOALS = {"P1": (">=", 0.97), "P2": (">=", 3.0), "P3": ("<=", 1.1), "P4": ("<=", 1.2), "P7": ("<=", 1.15)}


def paired(fns, repeat: int = 3) -> list[float]:
    """The best of `repeat` wall times of each of fns, called in turn (after one warm-up call each), so a drift
    of the machine's speed during the measurement hits all of them alike."""
    for fn in fns:
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def p1_hook_overhead(model, device) -> dict:
    from diffusers import DDIMScheduler

    from hspace.diffusion.sampler import noise_for
    from hspace.diffusion.schedule import SamplerSettings
    from hspace.directions.container import Directions
    from hspace.edits.shift import ShiftEdit

    sampler = SamplerSettings(num_steps=50, spacing="trailing")
    schedule = sampler.schedule(model.alphas_cumprod)
    strengths = [-4.0, -2.0, 0.0, 2.0, 4.0]
    k, steps = 1, schedule.num_steps
    directions = Directions(
        torch.randn(k, steps, *model.h_shape, generator=torch.Generator().manual_seed(0)),
        torch.ones(k, steps),
        schedule.timesteps,
        ["d"],
        "bench",
        model.name,
        model.weight_hash,
        {},
    )
    x_T, _ = noise_for(range(8), model, schedule)
    edit = ShiftEdit(strengths=strengths, batch_size=40)

    scheduler = DDIMScheduler.from_config(model.scheduler_config, timestep_spacing="trailing", clip_sample=False)
    scheduler.set_timesteps(50)
    rows = x_T.repeat_interleave(len(strengths), dim=0).to(device)

    @torch.no_grad()
    def plain():
        x = rows
        for t in scheduler.timesteps:
            x = scheduler.step(model.unet(x, t).sample, t, x, eta=0.0).prev_sample
        return x

    hooked, baseline = paired([lambda: edit.apply(model, schedule, directions, 0, x_T, None), plain], repeat=5)
    return {"value": baseline / hooked, "hooked_s": hooked, "plain_diffusers_s": baseline}


def p2_jacobian(model) -> dict:
    from hspace.diffusion.sampler import noise_for, sample
    from hspace.diffusion.schedule import make_schedule
    from hspace.directions.jacobian_map import jacobian_products
    from hspace.directions.subspace import block_subspace_iteration, sequential_power_iteration

    schedule = make_schedule(model.alphas_cumprod, 50, "trailing")
    x_T, _ = noise_for([0], model, schedule)
    trajectory = sample(model, schedule, x_T, record_x=True)
    idx = schedule.index_of(500)
    products = jacobian_products(model, trajectory.x_t[0, idx].to(model.device), int(schedule.timesteps[idx]))
    result = {}

    def clock() -> float:  # after the device has finished what was queued
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    for k in (1, 1, 3, 8):  # the first k=1 pair warms up the products (linearize, vmap) and is not kept
        start = clock()
        block = block_subspace_iteration(
            products.jvp, products.vjp, products.n, k, 2, 1e-3, 3, 500, 0, torch.float32, model.device
        )
        block_s = clock() - start
        start = clock()
        sequential = sequential_power_iteration(
            products.jvp, products.vjp, products.m, k, 1e-3, 3, 500, 0, torch.float32, model.device
        )
        sequential_s = clock() - start
        result[f"k={k}"] = {
            "block_s": block_s,
            "sequential_s": sequential_s,
            "speedup": sequential_s / block_s,
            "block_products": block.jvp_count + block.vjp_count,
            "sequential_products": sequential.jvp_count + sequential.vjp_count,
        }
    result["value"] = min(r["speedup"] for r in result.values())
    return result


SWEEP = ["[-4.0,0.0,4.0]", "[-3.0,0.0,3.0]", "[-2.0,0.0,2.0]", "[-1.0,0.0,1.0]", "[-6.0,0.0,6.0]"]
SMALL = ["sampler.num_steps=20", "num_samples=8", "real_images=0", "logger=none", "metrics=none"]


def p3_sweep(model, work: Path, on: str) -> dict:
    from hspace.diffusion.schedule import SamplerSettings
    from hspace.directions.pca import PCA
    from hspace.edits.shift import ShiftEdit
    from hspace.job.edit import edit_generated

    env = {**os.environ, "WANDB_MODE": "disabled"}
    args = ["-m", f"edit.strengths={','.join(SWEEP)}", *SMALL, on, f"cache_dir={work / 'cache'}"]
    start = time.perf_counter()
    run_to_end([HSPACE_RUN, *args, f"hydra.sweep.dir={work / 'sweep'}"], env)
    sweep = time.perf_counter() - start

    sampler = SamplerSettings(num_steps=20, spacing="trailing")
    start = time.perf_counter()
    directions = PCA().find(model, sampler)
    schedule = sampler.schedule(model.alphas_cumprod)
    for strengths in SWEEP:
        edit = ShiftEdit(strengths=json.loads(strengths))
        edit_generated(edit, model, schedule, directions, 5, range(8), False)
    one_process = time.perf_counter() - start
    return {"value": sweep / one_process, "sweep_s": sweep, "one_process_s": one_process}


def p4_pca_memory(n: int = 256) -> dict:
    """Peak RSS of PCA collection (10 steps, k = 25) at N and 10 N samples, each in a fresh process."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_pca_memory", ROOT / "scripts" / "bench_pca_memory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    peaks = {}
    for count in (n, 10 * n):
        out = run_to_end([sys.executable, "-c", module.CHILD, str(count), "10", "25", "40", "96"])
        peaks[count] = json.loads(out.strip().splitlines()[-1])
    small, large = peaks[n], peaks[10 * n]
    growth = {str(c): r["peak_mib"] - r["after_load_mib"] for c, r in peaks.items()}
    return {
        "value": large["peak_mib"] / small["peak_mib"],
        "peak_mib": {str(c): r["peak_mib"] for c, r in peaks.items()},
        "growth_mib": growth,
    }


def p5_batched_strengths(model) -> dict:
    from hspace.diffusion.sampler import noise_for
    from hspace.diffusion.schedule import SamplerSettings
    from hspace.directions.container import Directions
    from hspace.edits.shift import ShiftEdit

    schedule = SamplerSettings(num_steps=50, spacing="trailing").schedule(model.alphas_cumprod)
    strengths = [-4.0, -2.0, 0.0, 2.0, 4.0]
    directions = Directions(
        torch.randn(1, 50, *model.h_shape), torch.ones(1, 50), schedule.timesteps, ["d"], "bench", "m", "w", {}
    )
    x_T, _ = noise_for([0], model, schedule)
    batched, single = paired(
        [
            lambda: ShiftEdit(strengths=strengths).apply(model, schedule, directions, 0, x_T, None),
            lambda: [ShiftEdit(strengths=[s]).apply(model, schedule, directions, 0, x_T, None) for s in strengths],
        ]
    )
    return {"value": single / batched, "batched_s": batched, "one_at_a_time_s": single}


def p6_main_job(work: Path, on: str) -> dict:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    run_dir = work / "main_job"
    start = time.perf_counter()
    run_to_end([HSPACE_RUN, f"run_dir={run_dir}", f"cache_dir={work / 'main_cache'}", "logger=none", on], env)
    wall = time.perf_counter() - start
    metrics = json.loads((run_dir / "metrics.json").read_text())
    stages = {k.removeprefix("time/").removesuffix("_s"): v for k, v in metrics.items() if k.startswith("time/")}
    return {"value": wall, "stages_s": stages}


# Two jobs of equal size that share nothing in the cache: PCA over two different sets of collection seeds.
PAIR_SEEDS = ["1000000", "2000000"]
PAIR = ["method=pca", f"method.first_seed={','.join(PAIR_SEEDS)}", *SMALL]


def p7_parallel_jobs(work: Path, on: str) -> dict:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    env.pop("OMP_NUM_THREADS", None)

    def sweep(name: str, *launcher: str) -> float:
        start = time.perf_counter()
        where = [f"cache_dir={work / name}", f"hydra.sweep.dir={work / name / 'sweep'}"]
        run_to_end([HSPACE_RUN, "-m", *PAIR, on, *launcher, *where], env)
        return time.perf_counter() - start

    sequential = sweep("p7_sequential")
    parallel = sweep("p7_parallel", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    start = time.perf_counter()
    jobs = [
        subprocess.Popen(
            [
                HSPACE_RUN,
                "method=pca",
                f"method.first_seed={seed}",
                *SMALL,
                on,
                f"cache_dir={work / 'p7_fight'}",
                f"run_dir={work / 'p7_fight' / seed}",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for seed in PAIR_SEEDS
    ]
    if any(job.wait() for job in jobs):
        raise UserError("a plain parallel job of P7 failed: run it alone (hspace-run method=pca ...) to see why")
    fight = time.perf_counter() - start
    return {
        "value": parallel / sequential,
        "parallel_s": parallel,
        "sequential_s": sequential,
        "default_threads_parallel_s": fight,
        "default_threads_ratio": fight / sequential,
    }


def rounded(value):
    """Floats to 3 decimals, through dicts."""
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return value


def verdict(name: str, value: float) -> str:
    if name not in GOALS:
        return "-"
    op, goal = GOALS[name]
    met = value >= goal if op == ">=" else value <= goal
    return f"{op} {goal}: {'met' if met else 'not met'}"


@user_errors_exit  # a bad --json path (before any benchmark runs) or a failed child run is one line and exit 2
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    names = ["P1", "P2", "P3", "P4", "P5", "P6", "P7"]
    parser.add_argument("--only", nargs="+", default=names, choices=names)
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.json is not None:
        output_path(args.json, "--json", "file")
    from hspace.diffusion.loading import load_model

    model = load_model("shapes32", device=args.device)
    machine = torch.cuda.get_device_name() if args.device == "cuda" else f"{os.cpu_count()} CPU cores"
    on = f"trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}"  # the hspace-run jobs' device too
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        runners = {
            "P1": lambda: p1_hook_overhead(model, args.device),
            "P2": lambda: p2_jacobian(model),
            "P3": lambda: p3_sweep(model, work, on),
            "P4": p4_pca_memory,
            "P5": lambda: p5_batched_strengths(model),
            "P6": lambda: p6_main_job(work, on),
            "P7": lambda: p7_parallel_jobs(work, on),
        }
        try:
            for name in args.only:
                results[name] = runners[name]()
                print(f"{name}: {results[name]['value']:.3f}", file=sys.stderr, flush=True)
        finally:  # what was measured before a failure is kept
            if args.json and results:
                from hspace.files import atomic_write_text

                atomic_write_text(args.json, json.dumps({"machine": machine, "results": results}, indent=2))
    lines = [f"Measured on {machine}, torch {torch.__version__}, {torch.get_num_threads()} threads.", ""]
    lines += ["| | value | goal | details |", "|---|---|---|---|"]
    for name, result in results.items():
        details = json.dumps(rounded({k: v for k, v in result.items() if k != "value"}))
        lines.append(f"| {name} | {result['value']:.3f} | {verdict(name, result['value'])} | {details} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
