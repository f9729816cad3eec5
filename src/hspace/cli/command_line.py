"""The command line checked against the config tree before Hydra runs a job: a misspelled group option, a key that
does not exist or an override Hydra cannot parse is one line and exit 2, like every other bad setting, instead of
Hydra's multi-line report. The check composes the config as Hydra will (command-line and config search paths
included); a sweep (-m) is composed with every option of each swept config group. Command lines with other Hydra
flags (--help, --cfg, --config-dir, ...) are left to Hydra."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from hspace.errors import UserError

SWEEP_FLAGS = ("-m", "--multirun")
SWEEP_MODE = "hydra.mode=MULTIRUN"


def check_command_line(config_dir: str, config_name: str, command: str, args: Sequence[str]) -> None:
    """Refuse, as a UserError naming the override, a command line whose config cannot be composed."""
    from hydra.errors import HydraException, OverrideParseException

    if any(arg.startswith("-") and arg not in SWEEP_FLAGS for arg in args):
        return
    overrides = [arg for arg in args if arg not in SWEEP_FLAGS]
    sweep = len(overrides) < len(args) or SWEEP_MODE in overrides
    try:
        candidates = override_sets(overrides, config_dir) if sweep else [overrides]
    except OverrideParseException as error:
        raise UserError(describe(error, command)) from None
    if candidates is None:
        return
    failures = []
    for candidate in candidates:
        try:
            compose(config_dir, config_name, candidate)
        except HydraException as error:
            failures.append((candidate, error))
        except ValueError:  # a config group set to null: Hydra's ValueError names no override
            nulled = [o.split("=")[0].lstrip("+~") for o in candidate if o.endswith("=null")]
            group = next((key for key in nulled if is_config_group(key, config_dir)), None)
            if group is None:
                raise
            options = group_options(config_dir, config_name, candidate, group)
            raise UserError(
                f"{group}=null: {group} is a config group, which takes one of its options: choose one of "
                f"{', '.join(options)}"
            ) from None
    if not failures:
        return
    candidate, error = failures[0]
    if len(failures) == len(candidates):
        raise UserError(describe(error, command))
    raise UserError(partial_sweep(error, command, candidate, candidates))


def partial_sweep(error: Exception, command: str, failing: list[str], candidates: list[list[str]]) -> str:
    """One line for an override that composes with some options of a swept config group but not with others
    (method=random,jacobian method.num_samples=32: only random has num_samples), naming the options it fails with:
    adding the key with + would fail for the others instead."""
    first = candidates[0]
    swept = [i for i in range(len(first)) if any(c[i] != first[i] for c in candidates)]
    options = [failing[i] for i in swept if failing is first or failing[i] != first[i]]
    named = " and ".join(options)
    if match := re.match(r"Could not override '([^']+)'", str(error)):
        return (
            f"{match[1]} is not a setting of {named} (the sweep's other options have it): run "
            f"{named} in a sweep of its own, without {match[1]}"
        )
    return f"{describe(error, command)} (with {named} of this sweep; its other options compose)"


def group_options(config_dir: str, config_name: str, overrides: list[str], group: str) -> list[str]:
    """The options of a config group as Hydra finds them (the config search path of the command line included):
    the ones Hydra lists when the group is given an option that does not exist."""
    from hydra.errors import HydraException, MissingConfigException

    probe = [o for o in overrides if o.split("=")[0].lstrip("+~") != group] + [f"{group}=__options__"]
    try:
        compose(config_dir, config_name, probe)
    except MissingConfigException as error:
        if error.options:
            return list(error.options)
    except (HydraException, ValueError):
        pass
    return sorted(path.stem for path in (Path(config_dir) / group).glob("*.yaml"))


def override_sets(overrides: list[str], config_dir: str) -> list[list[str]] | None:
    """The override lists that cover a sweep: every swept key at its first value, then each other option of a
    swept config group (method=pca,jacobian: each option is its own file) with the rest at their first. A swept
    value (first_seed=range(0,1000)) cannot change what composes, so only its first is composed. None where a
    sweep cannot be listed without the config (glob), or its values are not valid: Hydra reports those."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    values: list[list[str]] = []
    for override in parsed:
        if not override.is_sweep_override():
            values.append([override.input_line])
            continue
        try:
            swept = list(override.sweep_string_iterator())
        except Exception:  # a glob needs the config; range(0, 4, 0) is not a range
            return None
        key = override.get_key_element()
        options = [f"{key}={value}" for value in swept] or [override.input_line]
        values.append(options if is_config_group(key, config_dir) else options[:1])
    first = [options[0] for options in values]
    sets = [first]
    for index, options in enumerate(values):
        sets += [[*first[:index], option, *first[index + 1 :]] for option in options[1:]]
    return sets


def is_config_group(key: str, config_dir: str) -> bool:
    """Whether an override key chooses a config group option (method, hydra/launcher) rather than sets a value."""
    name = key.lstrip("+~")
    return "/" in name or (Path(config_dir) / name).is_dir()


def compose(config_dir: str, config_name: str, overrides: list[str]) -> None:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
            hydra_compose(config_name, overrides=overrides)
    finally:
        GlobalHydra.instance().clear()


def describe(error: Exception, command: str) -> str:
    """One line for a composition error: what was wrong with which override, and what to do."""
    from hydra.errors import MissingConfigException, OverrideParseException

    if isinstance(error, MissingConfigException) and error.options and error.missing_cfg_file:
        group, _, option = error.missing_cfg_file.rpartition("/")
        return f"{group}={option} is not an option of {group}: choose one of {', '.join(error.options)}"
    text = str(error)
    if match := re.match(r"Could not override '([^']+)'", text):
        key = match[1]
        return (
            f"{key} is not a setting of {command}: check its spelling ({command} --cfg job prints every setting), "
            f"or add a new one with +{key}=..."
        )
    if match := re.match(r"Could not append to config\. An item is already at '([^']+)'", text):
        return f"+{match[1]} adds a setting that already exists: change it without the +, e.g. {match[1]}=..."
    if match := re.match(r"Could not delete from config\. '([^']+)' does not exist", text):
        return f"~{match[1]} removes a setting that does not exist: check its spelling ({command} --cfg job)"
    if match := re.match(r"Ambiguous value for argument '([^']+)'", text):
        return (
            f"{match[1]} gives several values: add -m to sweep over them, or write key=[a,b] for a list or "
            "key='a,b' for text"
        )
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.startswith("See https") and "search path" not in line and "provider=" not in line
    ]
    if isinstance(error, OverrideParseException):
        lines.append("write key=value (https://hydra.cc/docs/advanced/override_grammar/basic)")
    return "; ".join(lines)
