"""Composition roots: the only code that sees a DictConfig. Library imports happen inside the tasks,
so `--help` and `--cfg job` answer quickly."""

from __future__ import annotations

import functools
import os
import re
import shutil
import sys
from pathlib import Path

CONFIG_DIR = str(Path(__file__).resolve().parents[3] / "conf")


def make_main(config_name: str, task):
    """The console script of a command: its command line checked against the config tree (one line and exit 2 for
    a misspelled option or key, hspace.cli.command_line), then `task` run as a Hydra job. The job's folder is
    removed when nothing was written into it, and a sweep refused in its first job leaves no sweep folder."""
    import hydra

    @hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name=config_name)
    @functools.wraps(task)  # Hydra names the job after the task's module (run, train, sample, table)
    def job(cfg) -> None:
        try:
            task(cfg)
        except SystemExit as exit_:
            if exit_.code == 2:
                remove_refused_sweep_record()
            raise
        finally:
            remove_job_dir_if_empty()

    @user_errors_exit
    def check_and_run() -> None:
        from hspace.cli.command_line import check_command_line

        check_command_line(CONFIG_DIR, config_name, f"hspace-{config_name}", sys.argv[1:])
        launcher = [arg for arg in sys.argv[1:] if re.fullmatch(r"\+?hydra/launcher=(local_jobs|slurm)", arg)]
        if not launcher:
            job()
            return
        if launcher[-1].endswith("=slurm") and shutil.which("srun") is None:  # before Hydra makes a sweep folder
            from hspace.errors import UserError

            raise UserError(NO_SLURM)
        # A submitit sweep runs its jobs in processes of their own: Hydra is asked to hand back what the launcher
        # raises, so that a job's refusal (or a missing SLURM) is one line here too.
        os.environ["HYDRA_FULL_ERROR"] = "1"
        try:
            job()
        except Exception as error:
            line = submitit_failure(error)
            if line is None:
                raise
            from hspace.errors import UserError

            raise UserError(line) from None

    return check_and_run


NO_SLURM = (
    "hydra/launcher=slurm needs SLURM (srun) on this machine: submit the sweep from the cluster, or try it here with "
    "hydra/launcher=local_jobs"
)


def submitit_failure(error: Exception) -> str | None:
    """One line for what a submitit launcher raised: the refusal a job printed (its stderr is in the error), or
    SLURM missing after all (submitit looks for it when the sweep starts); None for anything else."""
    named = [arg.split("=", 1)[1] for arg in sys.argv[1:] if arg.startswith("hydra.sweep.dir=")]
    sweep_dir = Path(named[-1]).expanduser() if named else None
    if type(error).__module__.startswith("submitit"):
        refusals = [line for line in str(error).splitlines() if line.startswith("error: ")]
        if refusals:
            where = f"; its logs are in {sweep_dir / '.submitit'}" if sweep_dir else ""
            return f"{refusals[-1].removeprefix('error: ')} (in a job of the sweep{where})"
    if isinstance(error, RuntimeError) and "Could not detect" in str(error) and "srun" in str(error):
        return NO_SLURM
    return None


INTERRUPTED_STATUS = 130  # 128 + SIGINT, as a shell reports a command Ctrl-C stopped


def user_errors_exit(task):
    """Print a UserError as one line on stderr and exit with status 2 instead of a traceback, also when
    it was raised inside hydra.utils.instantiate (which wraps it); a SIGTERM that a Lightning loop caught
    (hspace.lightning.terminated) as one line with status 143, and Ctrl-C as one line with status 130."""

    @functools.wraps(task)
    def wrapped(*args, **kwargs):
        from hspace.lightning.terminated import EXIT_STATUS, Terminated

        try:
            return task(*args, **kwargs)
        except Terminated as stopped:  # a SIGTERM in a Lightning loop: the status the signal itself would give
            print(f"error: {stopped}", file=sys.stderr)
            sys.exit(EXIT_STATUS)
        except KeyboardInterrupt:  # Ctrl-C: what was stopped has been recorded (a run's run_info.json), no traceback
            print("error: interrupted", file=sys.stderr)
            sys.exit(INTERRUPTED_STATUS)
        except Exception as error:
            cause = user_error_in(error)
            if cause is None:
                raise
            print(f"error: {one_line(str(cause))}", file=sys.stderr)
            sys.exit(2)

    return wrapped


def one_line(message: str) -> str:
    """A UserError's message; one raised in a DataLoader worker comes back wrapped in the worker's traceback
    ("Caught UserError in DataLoader worker process 0. Original Traceback ..."): its own last line."""
    if message.startswith("Caught UserError") and "Original Traceback" in message:
        return message.strip().splitlines()[-1].split("UserError: ", 1)[-1]
    return message


def user_error_in(error: BaseException | None):
    """The UserError that `error` is or was raised from, if any; a config value left at ??? counts as one."""
    from omegaconf.errors import MissingMandatoryValue

    from hspace.errors import UserError

    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, UserError):
            return error
        if isinstance(error, MissingMandatoryValue):
            return UserError(
                f"{str(error).splitlines()[0]}: a value left at ??? in the config must be given on the command line"
            )
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


REQUIRED = re.compile(r"""\$\{required:\s*(?:"([^"]*)"|'([^']*)')?\s*\}""")


def refuse_unset(hint: str = "") -> None:
    """The `required` resolver: `${required:"what to give"}` marks a value that must come from the command line. An
    experiment needs it where a group already sets the value, since a ??? merged onto a set value leaves it as it
    was. require_complete finds these before any work; resolving one anywhere else raises this one line."""
    from hspace.errors import UserError

    raise UserError(f"not set: {hint or 'a required value'}: give it on the command line")


def register_resolvers() -> None:
    """The resolvers configs may use: `required` (refuse_unset)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("required"):
        OmegaConf.register_new_resolver("required", refuse_unset)


register_resolvers()


def require_complete(cfg) -> None:
    """Refuse a config with values left at ??? or marked ${required:...} before any work starts, naming them."""
    from omegaconf import OmegaConf

    from hspace.errors import UserError

    def walk(node, prefix: str):
        keys = range(len(node)) if OmegaConf.is_list(node) else node.keys()
        for key in keys:
            path = f"{prefix}{key}"
            child = node._get_node(key)
            if OmegaConf.is_missing(node, key):
                yield path, "??? in the config"
            elif OmegaConf.is_interpolation(node, key):
                if isinstance(raw := child._value(), str) and (marker := REQUIRED.fullmatch(raw.strip())):
                    yield path, marker.group(1) or marker.group(2) or "required"
            elif OmegaConf.is_config(child):
                yield from walk(child, f"{path}.")

    missing = sorted(walk(cfg, ""))
    if missing:
        raise UserError(
            f"not set: {', '.join(f'{path} ({why})' for path, why in missing)}: give "
            f"{'them' if len(missing) > 1 else 'it'} on the command line, e.g. {missing[0][0]}=..."
        )


def resolve_device(name: str):
    """auto: CUDA when available, else CPU; gpu/cuda; cpu."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device("cuda" if name in ("gpu", "cuda") else name)


def sampler_settings(cfg):
    """The sampler config group as SamplerSettings."""
    from omegaconf import OmegaConf

    from hspace.diffusion.schedule import SamplerSettings

    return SamplerSettings(**OmegaConf.to_container(cfg, resolve=True))


def note_grid_start(sampler, alphas_cumprod) -> None:
    """Tell the user, in one line, when the sampler's grid starts far down the model's schedule (SamplerSettings.
    start_note)."""
    from hspace.checks import note

    message = sampler.start_note(alphas_cumprod)
    if message is not None:
        note(message)


def remove_job_dir_if_empty() -> None:
    """Remove the directory Hydra made for this job if nothing was written into it (the command was refused
    before any work, or it wrote elsewhere: `run_dir=...`, or a resumed training run's own directory), and the
    folders above it under the working directory that are left empty (outputs/<command>/<date>)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    runtime = HydraConfig.get().runtime
    prune_empty(Path(runtime.output_dir).resolve(), Path(runtime.cwd).resolve())


def prune_empty(folder: Path, cwd: Path) -> None:
    """Remove `folder` if it is empty (never the working directory), then the folders above it that are left
    empty, up to the working directory."""
    for current in (folder, *folder.parents):
        if current == cwd or (current != folder and cwd not in current.parents):
            return
        if not current.is_dir() or any(current.iterdir()):
            return
        current.rmdir()


def remove_refused_sweep_record() -> None:
    """A sweep whose job was refused stops there: if its folder holds nothing but Hydra's multirun.yaml (this was
    its first job), remove both, as a refused single run leaves nothing."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    runtime = HydraConfig.get().runtime
    sweep_dir, cwd = Path(HydraConfig.get().sweep.dir).resolve(), Path(runtime.cwd).resolve()
    job_dir = Path(runtime.output_dir).resolve()
    if sweep_dir == cwd or not sweep_dir.is_dir() or sweep_dir not in job_dir.parents:
        return
    others = [p for p in sweep_dir.iterdir() if p.name != "multirun.yaml" and p.resolve() != job_dir]
    if others or (job_dir.is_dir() and any(job_dir.iterdir())):
        return
    if job_dir.is_dir() and job_dir.parent == sweep_dir:
        job_dir.rmdir()
    (sweep_dir / "multirun.yaml").unlink(missing_ok=True)
    prune_empty(sweep_dir, cwd)  # and multirun/<command>/<date> above it


def build(node, **extra):
    """The object a config node's `_target_` names, its settings converted to plain lists and dicts: library
    code never sees an omegaconf container. A setting the class does not take is one line naming it."""
    import hydra
    from hydra.errors import InstantiationException

    from hspace.errors import UserError

    try:
        return hydra.utils.instantiate(node, **extra, _convert_="all")
    except InstantiationException as error:
        if isinstance(error.__cause__, ImportError):  # a class of one's own whose package is not on the path
            lines = str(error.__cause__).strip().splitlines()
            reason = lines[1].strip() if len(lines) > 1 else lines[0] if lines else "ImportError"
            raise UserError(
                f"_target_={node.get('_target_')} cannot be imported ({reason}): put the package that defines it on "
                "the path (e.g. PYTHONPATH=. hspace-run ...), or fix the name"
            ) from None
        unknown = re.search(r"unexpected keyword argument '(\w+)'", str(error.__cause__ or ""))
        if not isinstance(error.__cause__, TypeError) or unknown is None:
            raise
        target = str(node.get("_target_", "")).rsplit(".", 1)[-1]
        raise UserError(
            f"{target} takes no setting {unknown.group(1)!r} (set by an experiment or a +key on the command "
            "line): remove it, or choose the option it was written for"
        ) from None


def as_list(setting) -> list[str]:
    """A list setting that may also be given as one name or path (`group_by=method` for `group_by=[method]`,
    `runs=/a/b` for `runs=[/a/b]`), as strings; null is an empty list."""
    if setting is None:
        return []
    return [setting] if isinstance(setting, str) else [str(name) for name in setting]


def record_config(cfg, run_dir) -> None:
    """config.yaml (resolved) and overrides.yaml (the command line) in the run directory."""
    from omegaconf import OmegaConf

    from hspace.cli.validate import overrides_of_this_run
    from hspace.files import atomic_write_text

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    atomic_write_text(run_dir / "overrides.yaml", OmegaConf.to_yaml(overrides_of_this_run()))


def console(cfg) -> None:
    """Quiet third-party output unless `verbose`, progress bars as `progress` says (see hspace.progress), and a
    fair share of the CPU cores when parallel jobs run side by side."""
    from hspace.checks import boolean
    from hspace.progress import show_progress
    from hspace.quiet import quiet

    quiet(boolean(cfg.get("verbose", False), "verbose"))
    progress = cfg.get("progress")
    show_progress(None if progress is None else boolean(progress, "progress"))
    share_cores()


def parallel_jobs() -> int:
    """How many jobs of this Hydra multirun run at once on this machine (1 outside a parallel launcher)."""
    import os

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return 1
    launcher = HydraConfig.get().launcher
    if "joblib" not in str(launcher.get("_target_", "")):
        return 1
    n_jobs = launcher.get("n_jobs") or -1
    return (os.cpu_count() or 1) if n_jobs < 0 else n_jobs


def share_cores() -> None:
    """Give each of J parallel jobs cpu_count / J torch threads (intra- and inter-op), set before any work:
    torch's default of one thread per core in every job makes J jobs fight over the cores."""
    import os

    jobs = parallel_jobs()
    if jobs <= 1:
        return
    import torch

    threads = max(1, (os.cpu_count() or 1) // jobs)
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # already set in this process (a reused worker): the intra-op count is what matters
        pass
    os.environ["OMP_NUM_THREADS"] = str(threads)  # for processes this job starts


def make_loggers(cfg, job_type: str) -> list:
    """The loggers of the `logger` group. W&B runs get the sweep as their group (in a multirun), `job_type`, and
    tags from the chosen config options (method=pca, model=shapes32, ...), unless the config sets them."""
    loggers = []
    for node in (cfg.logger or {}).values():
        extra = {}
        if is_wandb_logger(node):
            choices = config_choices()
            extra = {"job_type": job_type, "group": node.get("group") or sweep_group()}
            extra["tags"] = list(node.get("tags") or []) or [f"{k}={v}" for k, v in choices.items() if v]
        loggers.append(build(node, **extra))
    return loggers


def is_wandb_logger(node) -> bool:
    """Whether a logger config node builds hspace's W&B logger (read before it is built)."""
    return str(node.get("_target_", "")).endswith("wandb_logger")


def config_choices() -> dict[str, str]:
    """The option chosen in each config group of this Hydra job (empty outside one)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    choices = HydraConfig.get().runtime.choices
    return {k: str(v) for k, v in choices.items() if not k.startswith("hydra") and v is not None}


def sweep_group() -> str | None:
    """The sweep directory's name in a multirun (one W&B group per sweep), else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return Path(HydraConfig.get().sweep.dir).name


def flat_config(cfg) -> dict:
    """The resolved config as dotted keys (so a dashboard can group and filter by method.num_samples, edit.strengths,
    ...), with the chosen option of each group as `choice/<group>`."""
    from omegaconf import OmegaConf

    def flatten(node, prefix: str) -> dict:
        if isinstance(node, dict) and node:
            return {k: v for key, value in node.items() for k, v in flatten(value, f"{prefix}{key}.").items()}
        return {prefix[:-1]: node}

    flat = flatten(OmegaConf.to_container(cfg, resolve=True), "")
    return flat | {f"choice/{group}": option for group, option in config_choices().items()}
