"""hspace-table: tables and a comparison plot from finished runs (conf/table.yaml)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from hspace.cli import as_list, make_main, user_errors_exit
from hspace.errors import UserError


@user_errors_exit
def make_table(cfg: DictConfig) -> dict[str, Path]:
    from hspace.checks import integer, output_path
    from hspace.cli.validate import overrides_of_this_run
    from hspace.tables.build import automatic_groups, build_table, check_group_keys, to_markdown, write_table
    from hspace.tables.collect import local_runs, wandb_runs
    from hspace.tables.plot import plot_curves, strength_curves

    integer(cfg.digits, "digits", 0, 12)
    out = output_path(cfg.output_dir, "output_dir", "folder")
    given = any(o.startswith("runs=") for o in overrides_of_this_run())
    # the default folders are searched where they exist; a folder the user names must exist; with a W&B project
    # the table is the project's runs alone unless runs= names folders too (the default folders would hold the
    # local copies of synced runs, which would count twice)
    paths = as_list(cfg.runs)
    existing = [p for p in paths if given or Path(p).expanduser().exists()]
    runs = local_runs(existing or paths) if (existing or not cfg.wandb) and (given or not cfg.wandb) else []
    if cfg.wandb:
        runs += wandb_runs(cfg.wandb)
        if not runs:
            raise UserError(f"the W&B project {cfg.wandb} has no finished hspace-run runs: check the project's name")
    layout = cfg.layout
    group_by = automatic_groups(runs) if cfg.group_by == "auto" else check_group_keys(runs, as_list(cfg.group_by))
    columns = as_list(layout.columns) or None
    table = build_table(runs, layout.pattern, group_by, layout.row_name, columns)
    curves = None
    if cfg.plot.metric:  # before anything is written: a metric no run has is refused with nothing left behind
        directions = as_list(cfg.plot.directions) if cfg.plot.directions else None
        curves = strength_curves(runs, cfg.plot.metric, group_by, directions)
    written = write_table(table, out / layout.name, cfg.digits, layout.caption)
    if curves is not None:
        title = f"{cfg.plot.metric} against strength ({len(runs)} runs)"
        plot_file = out / f"{cfg.plot.metric.replace('/', '_')}_vs_strength.png"  # factors/leakage: one file
        written[".png"] = plot_curves(curves, cfg.plot.metric, plot_file, title)
    print(f"{len(runs)} runs -> {', '.join(str(p) for p in written.values())}\n\n{to_markdown(table, cfg.digits)}")
    return written


main = make_main("table", make_table)


if __name__ == "__main__":
    main()
