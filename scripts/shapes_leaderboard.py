"""The Shapes leaderboard: every method on the shipped Shapes DDPM, judged by the factors measured from pixels.

For each method (and target factor, for the supervised ones) and each seed, one `hspace-run` edits a fresh set
of generated samples along its directions over a grid of strengths; every direction is then compared at a
matched effect size on its target factor (hspace.tables.leaderboard): success, worst leakage into another
factor and validity at that point, mean ± std over seeds. Each method's set of directions is also scored as
codes of the true factors of inverted test images (DCI, MIG), beside as many principal components of the
inverted x_T (one baseline row per number of codes). Discovery time comes from the run that found the
directions, edit time per edited image from every run. Beside the table (leaderboard.{md,tex,csv} and a plot),
best.{md,tex,csv} holds each method's direction that reaches the matched effect on every seed with the least
leakage (hspace.tables.leaderboard.best_per_method). Finished runs are kept and not repeated while their
settings stay the same (`--runs`), so the script resumes.

    python scripts/shapes_leaderboard.py                        # writes experiments/shapes_leaderboard
    python scripts/shapes_leaderboard.py --quick                # a few minutes: fewer samples, one seed (outputs/)
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from hspace.checks import integer, output_path
from hspace.cli import user_errors_exit
from hspace.errors import UserError
from hspace.metrics.keys import direction_values, edit_key
from hspace.tables.build import Cell, Table, to_markdown, write_table
from hspace.tables.leaderboard import MATCHED_EFFECT, best_per_method, direction_point

ROOT = Path(__file__).resolve().parents[1]
# The supervised attributes and the factor each should edit (positive strengths).
ATTRIBUTE_TARGETS = {
    "large": "r",
    "left": "-cx",
    "top": "-cy",
    "light_background": "background=light",
    "red": "colour=red",
    "circle": "shape=circle",
}
COLUMNS = [
    "strength",
    "reached",
    "success",
    "leakage",
    "valid",
    "dci_d",
    "dci_c",
    "dci_i",
    "mig",
    "discovery_s",
    "edit_ms",
]


@dataclass
class Entry:
    """One hspace-run configuration: a method (label), its overrides, strengths and the targets it is meant for."""

    run: str
    method: str
    overrides: list[str]
    strengths: list[float]
    num_directions: int
    targets: dict[str, str] = field(default_factory=dict)  # direction -> factor target (supervised)


BEST_CAPTION = "the one that reaches the matched effect on every seed with the least leakage"


def entries(quick: bool) -> list[Entry]:
    attributes = list(ATTRIBUTE_TARGETS)
    bank = 64 if quick else 400
    boundary = [
        "method=boundary",
        "edit=boundary_step",
        "method.bank=inverted",
        "method.data=${data}",
        f"method.num_bank={bank}",
        "method.t_mix=500",
        "edit.mode=relative",
        "edit.x_scale=1.0",
        "edit.h_scale=null",
    ]
    return [
        Entry("pca", "pca", ["method=pca"], [0, 1, 2, 3, 4, 6, 8], 5),
        Entry("random", "random", ["method=random"], [0, 1, 2, 3, 4, 6, 8], 5),
        # The reference scaling (per-step singular values, scale_mode=sigma_t) is about 1e-3 to 3e-2 on this model.
        Entry("jacobian", "jacobian", ["method=jacobian"], [0, 3000, 10000, 20000, 30000, 60000, 100000], 3),
        # LOCO's x_t directions of one sample, transferred to every edited sample as the paper evaluates them.
        Entry("loco", "loco", ["method=loco", "edit=xt_shift"], [0, 4, 8, 12, 16, 24, 32], 3),
        Entry(
            "class_mean",
            "class_mean",
            [
                "method=class_mean",
                f"method.attributes=[{','.join(attributes)}]",
                f"method.num_index={256 if quick else 1000}",
                f"method.top_k={32 if quick else 100}",
            ],
            [0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0],
            len(attributes),
            dict(ATTRIBUTE_TARGETS),
        ),
        *(
            Entry(
                f"boundary_{a}",
                "boundary",
                [*boundary, f"method.attribute={a}"],
                [0, 2.5, 5, 10, 15, 20, 30],
                1,
                {a: ATTRIBUTE_TARGETS[a]},
            )
            for a in attributes
        ),
    ]


def override(key: str, value: str) -> str:
    return f"+metrics.factor_targets.{key}='{value}'"


def run_one(entry: Entry, seed: int, run_dir: Path, cache: Path, targets: dict[str, str], args) -> dict:
    """The run of one entry and seed: its metrics.json when it finished with the same resolved config (so a
    rerun with other --samples or --steps, or a killed run, is run again), else a fresh run."""
    from hydra import compose, initialize_config_dir

    from hspace.checks import note
    from hspace.cli import CONFIG_DIR
    from hspace.cli.run import completed, made_with, run

    overrides = [
        *entry.overrides,
        f"num_directions={entry.num_directions}",
        f"edit.strengths=[{','.join(str(float(s)) for s in entry.strengths)}]",
        f"sampler.num_steps={args.steps}",
        f"num_samples={args.samples}",
        f"first_seed={seed}",
        "real_images=0",
        "logger=none",
        "metrics.fid.backend=none",
        "metrics.disentanglement.num_images=0",
        f"metrics.factor_pairs={args.factor_pairs}",
        f"run_dir={run_dir}",
        f"cache_dir={cache}",
        *(override(d, t) for d, t in targets.items()),
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="run", overrides=overrides)
    if completed(run_dir):
        if made_with(run_dir, cfg):
            return json.loads((run_dir / "metrics.json").read_text())
        note(f"running {run_dir} again: its finished run had other settings")
    start = time.perf_counter()
    metrics = run(cfg)
    print(f"{entry.run} seed {seed}: {time.perf_counter() - start:.0f} s", flush=True)
    return metrics


def direction_sets(results: dict[str, tuple[Entry, list[dict]]], runs: Path, seed: int) -> dict:
    """Each method's edited directions as one set (the per-attribute boundary runs merged)."""
    from hspace.directions.container import Directions

    sets: dict[str, list] = {}
    for entry, _ in results.values():
        loaded = Directions.load(runs / entry.run / str(seed) / "directions.safetensors")
        sets.setdefault(entry.method, []).append(subset(loaded, entry.num_directions))
    return {method: merge(parts) for method, parts in sets.items()}


def subset(directions, count: int):
    return replace(
        directions,
        vectors=directions.vectors[:count],
        scales=directions.scales[:count],
        names=directions.names[:count],
        extra={k: v[:count] for k, v in directions.extra.items()},
    )


def merge(parts):
    if len(parts) == 1:
        return parts[0]
    return replace(
        parts[0],
        vectors=torch.cat([p.vectors for p in parts]),
        scales=torch.cat([p.scales for p in parts]),
        names=[n for p in parts for n in p.names],
        extra={},
    )


def disentanglement(sets: dict, args) -> tuple[dict[str, dict], dict[int, dict]]:
    """DCI and MIG of each method's set of directions, and of as many x_T principal components as each set has
    codes (the baselines, by number of codes)."""
    from hspace.data.shapes import ShapesDataset
    from hspace.diffusion.loading import load_model
    from hspace.diffusion.schedule import SamplerSettings
    from hspace.job.disentangle import disentangle_stage, shapes_factor_images

    model = load_model("shapes32")
    schedule = SamplerSettings(num_steps=args.steps, spacing="trailing").schedule(model.alphas_cumprod)
    known = shapes_factor_images(ShapesDataset(args.images, "test"), args.images)
    scores, baselines = {}, {}
    for method, directions in sets.items():
        if not bool(directions.scales.any()) or not bool(directions.vectors.any()):  # x_t directions: no h codes
            continue
        start = time.perf_counter()
        measured = disentangle_stage(model, schedule, directions, len(directions.names), known)
        scores[method] = {k.split("/")[-1]: v for k, v in measured.items() if k.count("/") == 1}
        baselines[len(directions.names)] = {
            k.split("/")[-1]: v for k, v in measured.items() if k.startswith("disentangle/x_T_pca/")
        }
        print(f"disentanglement of {method} ({len(directions.names)} codes): {time.perf_counter() - start:.0f} s")
    return scores, baselines


def leaderboard(results: dict[str, tuple[Entry, list[dict]]], scores: dict, baselines: dict, args) -> Table:
    rows, cells = [], {}

    def add(row: tuple, column: str, value: float) -> None:
        cells.setdefault((row, column), Cell()).values.append(float(value))

    for entry, seed_metrics in results.values():
        first = seed_metrics[0]
        # In name order: a run read back from metrics.json (sorted keys) and one just finished list them alike.
        names = sorted(direction_values(first, "factors/target"))
        for name in names:
            row = (entry.method, name, first[edit_key(name, "factors", "target")])
            rows.append(row)
            for metrics in seed_metrics:
                point = direction_point(metrics, name, entry.strengths)
                add(row, "strength", point.strength)
                add(row, "reached", point.reached)
                for key, value in point.values.items():
                    if not math.isnan(value):
                        add(row, key, value)
                edited = metrics["edit/num_directions"] * metrics["edit/num_samples"] * len(entry.strengths)
                add(row, "edit_ms", 1000 * metrics["time/edit_s"] / edited)
            if "time/directions_s" in first:
                add(row, "discovery_s", first["time/directions_s"])
            for key, value in scores.get(entry.method, {}).items():
                if key in COLUMNS:
                    add(row, key, value)
    for count, baseline in sorted(baselines.items()):  # one per number of codes a method's set has
        row = ("x_T PCA (baseline)", f"{count} codes", "-")
        rows.append(row)
        for key, value in baseline.items():
            if key in COLUMNS:
                add(row, key, value)
    return Table(["method", "direction", "target"], rows, COLUMNS, cells)


def plot(table: Table, path: Path) -> None:
    from hspace.plots import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(6.5, 4.5), dpi=120)
    methods = ["pca", "random", "jacobian", "loco", "class_mean", "boundary"]
    markers = dict(zip(methods, "osDP^v", strict=True))
    colours = {m: f"C{i}" for i, m in enumerate(methods)}
    for row in table.rows:
        success, leakage = table.cell(row, "success"), table.cell(row, "leakage")
        if not success.values:
            continue
        reached = table.cell(row, "reached").mean >= 0.5  # on most seeds
        colour = colours.get(row[0], "k")
        ax.scatter(
            leakage.mean,
            success.mean,
            marker=markers.get(row[0], "x"),
            facecolors=colour if reached else "none",
            edgecolors=colour,
        )
        ax.annotate(
            f"{row[1]} ({row[2]})", (leakage.mean, success.mean), fontsize=6, xytext=(3, 3), textcoords="offset points"
        )
    from matplotlib.lines import Line2D

    shown = dict.fromkeys(row[0] for row in table.rows if row[0] in markers)
    handles = [Line2D([], [], ls="", marker=markers[m], color=colours[m]) for m in shown]
    ax.legend(handles, list(shown), fontsize=7)
    ax.set_xlabel("worst leakage into another factor (at the matched effect)")
    ax.set_ylabel("success on the target factor")
    ax.set_title(
        f"Shapes leaderboard: directions at a matched effect of {MATCHED_EFFECT} (hollow: never reached; "
        "shown at the largest measured strength)",
        fontsize=8,
    )
    fig.tight_layout()
    save_figure(fig, path)


@user_errors_exit  # a UserError (a bad argument or path) is one line and exit 2, not a traceback
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--out",
        help="where the tables go (default: experiments/shapes_leaderboard; with --quick, "
        "outputs/shapes_leaderboard_quick)",
    )
    parser.add_argument(
        "--runs",
        help="the runs, kept so a rerun with the same settings resumes (default: outputs/shapes_leaderboard, "
        "or outputs/shapes_leaderboard_quick with --quick)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1000, 2000])
    parser.add_argument("--samples", type=int, default=64, help="edited samples per seed")
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps of every run")
    parser.add_argument("--images", type=int, default=512, help="inverted test images for DCI and MIG")
    parser.add_argument("--quick", action="store_true", help="one seed, 16 samples, small banks, 128 images")
    parser.add_argument(
        "--factor-pairs",
        choices=("object", "valid"),
        default="valid",
        help="the pairs the factor scores are taken over (metrics.factor_pairs): both images pass the pixel "
        "judge (default), or both hold an object, valid or not",
    )
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.samples, args.images = args.seeds[:1], 16, 128
    if args.samples < 2 or args.images < 16 or not args.seeds:
        raise UserError("--samples must be at least 2, --images at least 16, and one seed given")
    integer(args.steps, "--steps", 1, 1000)  # DDIM steps on the 1000 training timesteps
    for i, seed in enumerate(args.seeds):
        integer(seed, f"--seeds[{i}]", 0)
    if len(set(args.seeds)) < len(args.seeds):  # a repeated seed would overwrite its run and count twice
        raise UserError(f"--seeds {' '.join(map(str, args.seeds))} repeats a seed: give each seed once")
    args.runs = args.runs or f"outputs/shapes_leaderboard{'_quick' if args.quick else ''}"
    args.out = args.out or (
        "outputs/shapes_leaderboard_quick" if args.quick else str(ROOT / "experiments" / "shapes_leaderboard")
    )
    runs, out = output_path(args.runs, "--runs", "folder"), output_path(args.out, "--out", "folder")
    cache = runs / "cache"
    results: dict[str, tuple[Entry, list[dict]]] = {}
    for entry in entries(args.quick):
        first = run_one(entry, args.seeds[0], runs / entry.run / str(args.seeds[0]), cache, entry.targets, args)
        # Unsupervised directions keep the target found on the first seed, so every seed is judged alike.
        targets = direction_values(first, "factors/target") | entry.targets
        rest = [run_one(entry, s, runs / entry.run / str(s), cache, targets, args) for s in args.seeds[1:]]
        results[entry.run] = (entry, [first, *rest])
    scores, baselines = disentanglement(direction_sets(results, runs, args.seeds[0]), args)
    table = leaderboard(results, scores, baselines, args)
    out.mkdir(parents=True, exist_ok=True)
    caption = (
        f"Shapes leaderboard: every method on the shipped model at a matched effect of {MATCHED_EFFECT} on its "
        f"target factor; {len(args.seeds)} seeds x {args.samples} samples, {args.steps} DDIM steps; DCI and MIG on "
        f"{args.images} inverted test images"
        + ("; factor scores over every pair holding an object" if args.factor_pairs == "object" else "")
    )
    write_table(table, out / "leaderboard", digits=2, caption=caption)
    best = best_per_method(table)
    write_table(best, out / "best", digits=2, caption=f"Each method's best direction: {BEST_CAPTION}")
    plot(table, out / "leaderboard.png")
    print(caption)
    print(to_markdown(table, digits=2))
    print(f"\nEach method's best direction ({BEST_CAPTION}):")
    print(to_markdown(best, digits=2))


if __name__ == "__main__":
    main()
