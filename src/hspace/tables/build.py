"""Pivot run metrics into a table of mean +- std over runs, and write it as Markdown, LaTeX and CSV.

A layout picks cells out of the metric names with a regular expression whose named groups `row` and
`column` give the cell's place, e.g. `edit/score_delta/(?P<row>[^/@]+)/(?P<column>[^/@]+)$` gives the
Table I matrix (rows = edits, columns = measured attributes). `group_by` keys (metric or config names,
e.g. `method`) prefix each row; runs that agree on them (e.g. differ only in seed) are averaged.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean, stdev

from hspace.errors import UserError
from hspace.metrics.keys import DIRECTIONS_FILE_KEY, target_key
from hspace.run_record import PRESENTATION_SETTINGS
from hspace.tables.collect import RunRecord


@dataclass
class Cell:
    values: list[float] = field(default_factory=list)
    reported: int = 0  # the runs of the cell's row (each reported some metric of it): more than len(values) says so
    targets: list[str] = field(default_factory=list)  # the targets its runs measured against, where they differ

    @property
    def mean(self) -> float:
        return mean(self.values) if self.values else math.nan

    @property
    def std(self) -> float:
        return stdev(self.values) if len(self.values) > 1 else math.nan

    def text(self, digits: int, plus_minus: str = " ± ") -> str:
        """mean ± std; with "(n of m)" when only n of the m runs of its row measured it (the others reported it as
        null, or not at all)."""
        if not self.values:
            return "–"
        shown = f"{self.mean:.{digits}f}" + (f"{plus_minus}{self.std:.{digits}f}" if len(self.values) > 1 else "")
        shown += f" ({len(self.values)} of {self.reported})" if self.reported > len(self.values) else ""
        return shown + (f" {MIXED_TARGETS}" if self.targets else "")


@dataclass
class Table:
    row_keys: list[str]  # names of the row label columns: group_by keys, then "row"
    rows: list[tuple]  # row labels, in order of first appearance
    columns: list[str]
    cells: dict[tuple, Cell]  # (row, column) -> Cell

    def cell(self, row: tuple, column: str) -> Cell:
        return self.cells.get((row, column), Cell())

    @property
    def mixed_targets(self) -> bool:
        return any(cell.targets for cell in self.cells.values())


MIXED_TARGETS = "*"  # marks a cell that averages runs measured against different targets
MIXED_TARGETS_NOTE = (
    "* averages runs that measured it against different targets (each run's guess: the attribute or factor its "
    "headline strength moved most); metrics.targets and metrics.factor_targets fix one for every run."
)


# Settings that say where or how a run was made, not what it measured: runs may differ in them and still be
# averaged. Seeds (every setting whose name ends in "seed": first_seed, method.sample_seed, ...) are what
# mean ± std is over.
# Where a run wrote and what it showed, and which file its directions came from (runs of one method from
# different files are compared by their method settings)
IGNORED_SETTINGS = (*PRESENTATION_SETTINGS, "directions_path")


def setting_text(value) -> str:
    """A setting's value as text, numbers by value: edit.strengths=[-4,4] and [-4.0,4.0] compute alike (as in the
    cache keys, hspace.identity) and read alike, so runs differing only in how a number was written compare equal."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(element_text, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key!r}: {element_text(item)}" for key, item in value.items()) + "}"
    return str(value)


def element_text(value) -> str:
    """A list's or dict's element as setting_text writes it, text quoted as Python prints it in a list."""
    return repr(value) if isinstance(value, str) else setting_text(value)


def flat_settings(config: dict, prefix: str = "") -> dict[str, str]:
    """A run's config as dotted keys with printable values (lists and dicts as their text, numbers by value)."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat |= flat_settings(value, f"{name}.")
        else:
            flat[name] = setting_text(value)
    return flat


def differing_settings(runs: Sequence[RunRecord]) -> list[str]:
    """The config keys whose values differ between `runs`, apart from IGNORED_SETTINGS, in a stable order. A key
    that is a section in another run (metrics.classifier null in one run, with settings in another) is left to
    the settings below it, which differ as well."""
    flats = [flat_settings(run.config) for run in runs]
    keys = sorted({key for flat in flats for key in flat})
    sections = {".".join(key.split(".")[:i]) for key in keys for i in range(1, key.count(".") + 1)}
    keep = [
        k
        for k in keys
        if not k.rsplit(".", 1)[-1].endswith("seed")
        and not any(k == i or k.startswith(f"{i}.") for i in IGNORED_SETTINGS)
        and k not in sections
    ]
    return [k for k in keep if len({flat.get(k) for flat in flats}) > 1]


def automatic_groups(runs: Sequence[RunRecord]) -> list[str]:
    """group_by=auto: the settings that differ between the runs; runs of different methods are grouped by the
    method's name (the `method` metric) instead of the settings in which methods differ, and by the method
    settings that differ between runs of one method; runs along different directions files by the file (its
    content hash)."""
    keys = differing_settings(runs)
    by_method: dict[str, list[RunRecord]] = {}
    for run in runs:
        by_method.setdefault(str(run.value("method")), []).append(run)
    if len(by_method) > 1:  # a method's settings still part its own runs (PCA with 5 and with 10 components)
        within = {key for group in by_method.values() for key in differing_settings(group)}
        keys = ["method", *(k for k in keys if not k.startswith("method.") or k in within)]
    if len({str(run.value(DIRECTIONS_FILE_KEY)) for run in runs}) > 1:
        keys.append(DIRECTIONS_FILE_KEY)
    return keys


def check_group_keys(runs: Sequence[RunRecord], group_by: Sequence[str]) -> list[str]:
    """`group_by` as given, refusing in one line a key that is neither a metric nor a config key of any run (a
    typo would otherwise give a column of None and average runs that should stay apart)."""
    for key in group_by:
        if not any(run.has(key) for run in runs):
            raise UserError(
                f"group_by key {key!r} is neither a metric nor a config key of any of the {len(runs)} runs: check its "
                "spelling (config keys are dotted, e.g. method.num_samples) or use group_by=auto"
            )
    return list(group_by)


def check_averaged_runs(cell: tuple, runs: Sequence[RunRecord], group_by: Sequence[str]) -> None:
    """Refuse to average into one cell runs that differ in settings other than `group_by`, or that edited along
    different directions files (directions_path, compared by content), naming them."""
    files = {str(run.value(DIRECTIONS_FILE_KEY)) for run in runs}
    if len(files) > 1 and DIRECTIONS_FILE_KEY not in group_by:
        raise UserError(
            f"{len(runs)} runs would be averaged into the cell {'/'.join(cell[0])} {cell[1]} but edited along "
            f"{len(files)} different directions (directions_path, or found by the run): add "
            f"group_by=[{','.join([*group_by, DIRECTIONS_FILE_KEY])}] to keep them apart"
        )
    differing = [k for k in differing_settings(runs) if k not in group_by]
    if differing:
        shown = ", ".join(differing[:4]) + (f" and {len(differing) - 4} more" if len(differing) > 4 else "")
        raise UserError(
            f"{len(runs)} runs would be averaged into the cell {'/'.join(cell[0])} {cell[1]} but differ in {shown}: "
            f"add those keys to group_by (e.g. group_by=[{','.join([*group_by, differing[0]])}]) or use group_by=auto"
        )


def build_table(
    runs: Sequence[RunRecord],
    pattern: str,
    group_by: Sequence[str] = (),
    row_name: str = "row",
    columns: Sequence[str] | None = None,
) -> Table:
    """Mean and std over runs of every metric matching `pattern`, pivoted by its `row`/`column` groups."""
    try:
        regex = re.compile(pattern)
    except re.error as error:
        raise UserError(f"table pattern {pattern!r} is not a regular expression ({error}): fix it") from None
    if not {"row", "column"} <= set(regex.groupindex):
        raise UserError(f"table pattern {pattern!r} needs the named groups (?P<row>...) and (?P<column>...)")
    rows: dict[tuple, None] = {}
    found_columns: dict[str, None] = {}
    cells: dict[tuple, Cell] = {}
    sources: dict[tuple, list[RunRecord]] = {}  # the runs each cell averages
    measured_against: dict[tuple, set[str]] = {}  # the targets those runs measured each cell's metric against
    row_runs: dict[tuple, set[int]] = {}  # the runs that reported any metric of each row
    for index, run in enumerate(runs):
        prefix = tuple(setting_text(run.value(key)) for key in group_by)
        for name, value in run.metrics.items():
            match = regex.search(name)
            unmeasured = value is None or isinstance(value, float) and math.isnan(value)  # null in metrics.json
            if match is None or not (unmeasured or isinstance(value, (int, float))) or isinstance(value, bool):
                continue
            row = (*prefix, match["row"])
            rows.setdefault(row)
            row_runs.setdefault(row, set()).add(index)
            found_columns.setdefault(match["column"])
            cell = cells.setdefault((row, match["column"]), Cell())
            if not unmeasured:
                cell.values.append(float(value))
                sources.setdefault((row, match["column"]), []).append(run)
                if (target := target_key(name)) is not None:
                    measured_against.setdefault((row, match["column"]), set()).add(str(run.metrics.get(target)))
    for (row, column), cell in cells.items():
        cell.reported = len(row_runs[row])
        targets = measured_against.get((row, column), set())
        cell.targets = sorted(targets) if len(targets) > 1 else []
    for cell, averaged in sources.items():
        if len(averaged) > 1:
            check_averaged_runs(cell, averaged, group_by)
    if not rows:
        raise UserError(f"no metric of the {len(runs)} runs matches the table pattern {pattern!r}")
    unknown = [column for column in columns or () if column not in found_columns]
    if unknown:
        raise UserError(
            f"column {unknown[0]!r} is not one the table pattern finds in the {len(runs)} runs: choose among "
            f"{', '.join(found_columns)}"
        )
    chosen = list(columns) if columns else list(found_columns)
    return Table([*group_by, row_name], numeric_order(list(rows)), chosen, cells)


def numeric_order(rows: list[tuple]) -> list[tuple]:
    """Rows in order of appearance, except that within a group, labels that are all numbers (strengths)
    are sorted by value."""

    def number(label: str) -> float | None:
        try:
            value = float(label)
        except (TypeError, ValueError):
            return None
        return value if math.isfinite(value) else None

    if any(number(row[-1]) is None for row in rows):
        return rows
    groups = list(dict.fromkeys(row[:-1] for row in rows))
    return sorted(rows, key=lambda row: (groups.index(row[:-1]), number(row[-1])))


def markdown_escape(text: str) -> str:
    """A cell's text with its pipes escaped, which would otherwise split the cell."""
    return text.replace("|", "\\|")


def to_markdown(table: Table, digits: int = 3) -> str:
    header = [markdown_escape(h) for h in (*table.row_keys, *table.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for row in table.rows:
        cells = [*(markdown_escape(r) for r in row), *(table.cell(row, c).text(digits) for c in table.columns)]
        lines.append("| " + " | ".join(cells) + " |")
    if table.mixed_targets:
        lines += ["", markdown_escape(MIXED_TARGETS_NOTE).replace("*", "\\*", 1)]
    return "\n".join(lines) + "\n"


LATEX_SPECIAL = {
    **{c: "\\" + c for c in "_%&#${}"},
    "\\": r"\textbackslash{}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    """Text as LaTeX prints it: every character LaTeX reads as markup escaped (a label may be a path, ~/weights)."""
    return "".join(LATEX_SPECIAL.get(c, c) for c in text)


def to_latex(table: Table, digits: int = 3, caption: str = "") -> str:
    header = [*table.row_keys, *table.columns]
    lines = [r"\begin{table}[t]", r"\centering"]
    if caption:
        lines.append(rf"\caption{{{latex_escape(caption)}}}")
    lines += [r"\begin{tabular}{" + "l" * len(table.row_keys) + "r" * len(table.columns) + "}", r"\toprule"]
    lines.append(" & ".join(latex_escape(h) for h in header) + r" \\")
    lines.append(r"\midrule")
    for row in table.rows:
        cells = [table.cell(row, c).text(digits, plus_minus=r" $\pm$ ") for c in table.columns]
        lines.append(" & ".join([*(latex_escape(r) for r in row), *cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if table.mixed_targets:
        lines.append(r"\par\footnotesize " + latex_escape(MIXED_TARGETS_NOTE))
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*table.row_keys, *(f"{c}{suffix}" for c in table.columns for suffix in ("_mean", "_std", "_n"))])
    for row in table.rows:
        values = []
        for column in table.columns:
            cell = table.cell(row, column)
            values += [cell.mean, cell.std, len(cell.values)]
        writer.writerow([*row, *values])
    return out.getvalue()


def write_table(table: Table, stem: str | Path, digits: int = 3, caption: str = "") -> dict[str, Path]:
    """The table as <stem>.md, .tex and .csv, each written atomically; suffix -> path."""
    from hspace.files import atomic_write_text

    stem = Path(stem)
    texts = {".md": to_markdown(table, digits), ".tex": to_latex(table, digits, caption), ".csv": to_csv(table)}
    return {suffix: atomic_write_text(stem.with_suffix(suffix), text) for suffix, text in texts.items()}
