"""Checks of a composed config before any work: one function per config group, each raising a UserError that
names the setting, the bad value and the fix. Settings that belong to one class (a method's, an edit's) are
checked by that class when it is built; what needs several groups at once (FID and the number of samples, a
target and the classifier's attributes) is checked here or where both are known, still before any model runs."""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf

from hspace.checks import boolean, choice, integer, note, number, output_path
from hspace.errors import UserError

PRECISIONS = ("fp32", "bf16", "fp16")
# Lightning's precision names (hspace-train passes trainer.precision to it)
TRAINING_PRECISIONS = (
    *(16, 32, 64),
    *("16", "32", "64", "bf16"),
    *("16-mixed", "bf16-mixed", "32-true", "64-true", "16-true", "bf16-true", "transformer-engine"),
)
HALF_PRECISIONS = ("16-true", "bf16-true")  # every weight and buffer in half precision, not only the compute
FID_BACKENDS = ("classifier", "inception", "none")
EVALUATION_STRATEGIES = ("auto", "ddp", "ddp_spawn")
# Keys a user may add with + that code reads: per-direction targets.
OPEN_MAPPINGS = ("metrics.targets.", "metrics.factor_targets.")


def check_sampler(sampler: DictConfig) -> None:
    """The sampler group: no key that SamplerSettings lacks, and the values it checks itself (num_steps, eta as a
    number or one per step, spacing, final_alpha, clip_x0)."""
    from dataclasses import fields

    from hspace.cli import sampler_settings
    from hspace.diffusion.schedule import SamplerSettings

    known = [field.name for field in fields(SamplerSettings)]
    unknown = [key for key in sampler if key not in known]
    if unknown:
        raise UserError(
            f"sampler.{unknown[0]} is not a sampler setting: the sampler takes {', '.join(known)} (check the spelling)"
        )
    sampler_settings(sampler)


def check_device(accelerator: str, setting: str) -> None:
    """A GPU asked for where there is none."""
    import torch

    choice(accelerator, setting, ("auto", "cpu", "gpu", "cuda"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise UserError(f"{setting}={accelerator} but this machine has no CUDA GPU: use {setting}=auto or cpu")


def check_loggers(loggers: DictConfig | None) -> None:
    """The logger group: the mode of each W&B logger."""
    from hspace.cli import is_wandb_logger
    from hspace.loggers import WANDB_MODES

    for key, node in (loggers or {}).items():
        if is_wandb_logger(node):
            choice(node.get("mode", "auto"), f"logger.{key}.mode", WANDB_MODES)


def check_training(cfg: DictConfig) -> None:
    """hspace-train's own settings and the Trainer's: a run that would stop at once, never stop, or log and
    checkpoint never is refused before anything is built."""
    output_path(cfg.run_dir, "run_dir", "folder")
    output_path(cfg.export_dir, "export_dir", "folder")
    integer(cfg.seed, "seed", 0)
    integer(cfg.checkpoint_every_n_steps, "checkpoint_every_n_steps", 1)
    trainer = cfg.trainer
    max_steps = integer(trainer.get("max_steps", -1), "trainer.max_steps", -1)
    if max_steps == 0:
        raise UserError("trainer.max_steps=0 trains nothing: give the number of optimiser steps, e.g. 2000")
    if max_steps == -1 and trainer.get("max_time") is None and trainer.get("max_epochs") in (None, -1):
        raise UserError(
            "trainer.max_steps=-1 sets no step limit and neither trainer.max_time nor trainer.max_epochs sets "
            'another: give a step count, or a time limit such as trainer.max_time="00:02:00:00"'
        )
    if trainer.get("max_epochs") is not None:
        if integer(trainer.max_epochs, "trainer.max_epochs", -1) == 0:
            raise UserError("trainer.max_epochs=0 trains nothing: give a number of epochs, or null for no epoch limit")
    if trainer.get("max_time") is not None:
        check_max_time(trainer.max_time)
    if trainer.get("precision", 32) not in TRAINING_PRECISIONS:
        choice(str(trainer.precision), "trainer.precision", [str(p) for p in TRAINING_PRECISIONS[3:]])
    check_training_devices(trainer.get("devices", 1))
    integer(trainer.get("log_every_n_steps", 50), "trainer.log_every_n_steps", 1)
    if trainer.get("gradient_clip_val") is not None:
        number(trainer.gradient_clip_val, "trainer.gradient_clip_val", 0.0)
    if trainer.get("accumulate_grad_batches") is not None:
        integer(trainer.accumulate_grad_batches, "trainer.accumulate_grad_batches", 1)
    if "enable_progress_bar" in trainer:
        boolean(trainer.enable_progress_bar, "trainer.enable_progress_bar")
    check_device(trainer.accelerator, "trainer.accelerator")
    check_cosine_decay(cfg.module, max_steps)
    note_long_warmup(cfg.module, max_steps)
    check_training_length(cfg.module, max_steps, trainer.get("max_epochs"))
    check_training_precision(cfg.module, trainer.get("precision", 32))


def check_max_time(max_time) -> None:
    """trainer.max_time as Lightning reads it: "DD:HH:MM:SS", or a mapping of days, hours, minutes, seconds."""
    if isinstance(max_time, DictConfig):
        units = ("days", "hours", "minutes", "seconds")
        unknown = [key for key in max_time if key not in units]
        if unknown:
            raise UserError(f"trainer.max_time.{unknown[0]} is not a unit of time: give {', '.join(units)}")
        for key, value in max_time.items():
            number(value, f"trainer.max_time.{key}", 0.0)
        return
    parts = str(max_time).split(":")
    if len(parts) != 4 or not all(part.isdigit() for part in parts):
        raise UserError(
            f'trainer.max_time={max_time!r} is not a time limit: give days:hours:minutes:seconds, e.g. "00:02:00:00"'
        )


def lightning_devices(devices):
    """trainer.devices in Lightning's forms, a count or GPU indices given as text ("2", "0,1") read as numbers."""
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        return int(devices)
    if isinstance(devices, str) and "," in devices:
        parts = [part.strip() for part in devices.split(",") if part.strip()]
        return [int(part) if part.isdigit() else part for part in parts]
    return devices


def check_training_devices(devices) -> None:
    """trainer.devices for training: a count of at least 1, -1 or "auto" (every device), or GPU indices."""
    devices = lightning_devices(devices)
    if isinstance(devices, (list, ListConfig)) or devices in ("auto", -1):
        return
    integer(devices, "trainer.devices", 1)


def check_training_length(module: DictConfig, max_steps: int, max_epochs) -> None:
    """A module that spreads its learning rate over the whole training (ExportableModule.needs_known_length)
    refuses a run limited by time alone, whose length Lightning cannot know in advance."""
    if max_steps != -1 or max_epochs not in (None, -1):
        return
    module_class = exportable_class(module)
    if module_class is not None and module_class.needs_known_length:
        raise UserError(
            f"module={module.get('_target_')} schedules its learning rate over the whole training, so "
            "trainer.max_time alone cannot end it: give trainer.max_steps or trainer.max_epochs"
        )


def check_training_precision(module: DictConfig, precision) -> None:
    """A module that cannot train with every tensor in half precision (ExportableModule.not_in_half_precision)
    refuses 16-true and bf16-true; the mixed precisions keep the weights and buffers in float32."""
    if str(precision) not in HALF_PRECISIONS:
        return
    module_class = exportable_class(module)  # imports Lightning: only for the precisions it refuses
    if module_class is not None and module_class.not_in_half_precision:
        raise UserError(
            f"trainer.precision={precision}: module={module.get('_target_')} {module_class.not_in_half_precision}; "
            f"use {str(precision).replace('-true', '-mixed')} (trainer=gpu uses bf16-mixed)"
        )


def exportable_class(module: DictConfig):
    """The ExportableModule subclass `module` builds, or None where it names none (refused where it is built)."""
    from hydra.utils import get_class

    from hspace.lightning.exportable import ExportableModule

    try:
        module_class = get_class(module.get("_target_"))
    except Exception:  # an unknown module is refused where it is built, in one line
        return None
    return module_class if isinstance(module_class, type) and issubclass(module_class, ExportableModule) else None


def check_training_resolution(cfg: DictConfig) -> None:
    """Images of another size than the UNet is built for would train it at that size while its exported config
    still names its own, so that sampling would draw at the wrong size (checked once the data and the module have
    checked their own settings)."""
    unet = cfg.module.get("unet")
    resolution = cfg.data.get("resolution")
    if not isinstance(unet, DictConfig) or resolution is None or unet.get("sample_size") is None:
        return
    if resolution != unet.sample_size:
        raise UserError(
            f"data.resolution={resolution} but the UNet is built for {unet.sample_size}-pixel images "
            f"(model.unet.sample_size={unet.sample_size}): give data.resolution={unet.sample_size}, or a model of "
            "that size"
        )


def check_cosine_decay(module: DictConfig, max_steps: int) -> None:
    """A module with a cosine learning rate (module.lr_schedule) whose decay would end before it starts, which
    the module itself learns only from the Trainer when training starts."""
    from hspace.learning_rate import decay_range

    if module.get("lr_schedule") != "cosine":
        return
    steps = {key: module.get(key) for key in ("decay_start", "decay_steps")}
    for key, value in steps.items():
        if value is not None:
            integer(value, f"module.{key}", 0)
    decay_range(integer(module.get("warmup_steps", 0), "module.warmup_steps", 0), **steps, max_steps=max_steps)


def note_long_warmup(module: DictConfig, max_steps: int) -> None:
    """A warm-up as long as the run keeps the learning rate below module.lr throughout: likely a short trial run
    with the default warm-up, said before any work (not refused: such a run still trains)."""
    warmup = module.get("warmup_steps")
    if warmup is None or max_steps < 1:
        return
    if integer(warmup, "module.warmup_steps", 0) >= max_steps:
        note(
            f"module.warmup_steps={warmup} is not shorter than trainer.max_steps={max_steps}: the warm-up lasts the "
            "whole run, below module.lr until its last step at best (module.warmup_steps=0 trains at it throughout)"
        )


def check_run(cfg: DictConfig) -> None:
    """The run-level settings of hspace-run."""
    output_path(cfg.run_dir, "run_dir", "folder")
    if cfg.cache_dir is None:
        raise UserError("cache_dir=null names no folder: give the folder the cache lives in, e.g. cache_dir=.cache")
    output_path(cfg.cache_dir, "cache_dir", "folder")
    boolean(cfg.skip_done, "skip_done")
    integer(cfg.num_samples, "num_samples", 1)
    integer(cfg.first_seed, "first_seed", 0)
    integer(cfg.num_directions, "num_directions", 1)
    integer(cfg.real_images, "real_images", 0)
    choice(cfg.precision, "precision", PRECISIONS)
    check_device(cfg.trainer.accelerator, "trainer.accelerator")


def check_evaluation_devices(trainer: DictConfig, evaluated: dict[str, int]) -> None:
    """hspace-run's trainer.devices and trainer.strategy, which its evaluation loop reads only at the end of a
    run (checked where the run has one): a count that is no count, more GPUs than the machine has, or several
    devices without a strategy that spreads the loop over them (Lightning would launch the whole command again
    per device), and a set of edited images (`evaluated`: setting -> count, 0 for none) too small to give every
    process one (Lightning refuses a process without a batch, after the edits). Lightning's forms are accepted: a
    count, -1 or "auto", GPU indices as a list or "0,1"."""
    import torch

    from hspace.cli import resolve_device

    devices, strategy = trainer.get("devices", 1), trainer.get("strategy")
    if strategy is not None:
        choice(strategy, "trainer.strategy", EVALUATION_STRATEGIES)
    gpus = torch.cuda.device_count() if resolve_device(trainer.accelerator).type == "cuda" else 0
    devices = lightning_devices(devices)
    if isinstance(devices, (list, ListConfig)):
        if not gpus:
            raise UserError(f"trainer.devices={devices} lists GPUs but the run is on the CPU: give a count, e.g. 1")
        if not len(devices):
            raise UserError("trainer.devices=[] names no device: give a count such as 1 or GPU indices")
        count, highest = len(devices), max(integer(d, f"trainer.devices[{i}]", 0) for i, d in enumerate(devices))
    elif devices == -1 and not gpus:  # Lightning refuses it on the CPU
        raise UserError("trainer.devices=-1 means every GPU, but the run is on the CPU: give a count, e.g. 1 or 2")
    elif devices in ("auto", -1):  # every GPU; one process on the CPU
        count, highest = max(gpus, 1), 0
    else:
        count = integer(devices, "trainer.devices", 1)
        highest = count - 1 if gpus else 0
    if gpus and highest >= gpus:
        raise UserError(f"trainer.devices={devices} asks for more GPUs than the {gpus} this machine has: give fewer")
    if count > 1 and strategy not in ("ddp", "ddp_spawn"):
        raise UserError(
            f"trainer.devices={devices} spreads the evaluation over {count} devices, which needs trainer.strategy=ddp:"
            " add it (trainer=ddp sets both), or use trainer.devices=1"
        )
    for setting, images in evaluated.items():
        if 0 < images < count:
            raise UserError(
                f"{setting}={images} gives fewer images than the {count} processes trainer.devices={devices} scores "
                f"them in: give at least {count}, or fewer devices"
            )


def check_metrics(metrics: DictConfig) -> None:
    """The metrics group: an FID section with a known backend, mappings of targets, the disentanglement count."""
    fid = metrics.get("fid")
    if fid is not None and not isinstance(fid, DictConfig):
        raise UserError(
            f"metrics.fid={fid!r} replaces the FID settings with a value: set metrics.fid.backend=<"
            f"{'|'.join(FID_BACKENDS)}> instead"
        )
    if fid is not None:
        choice(fid.get("backend"), "metrics.fid.backend", FID_BACKENDS)
        if fid.backend != "none":
            integer(fid.get("reference_count"), "metrics.fid.reference_count", 2)
            choice(fid.get("reference_split"), "metrics.fid.reference_split", ("train", "val", "test"))
    for key in ("targets", "factor_targets"):
        value = metrics.get(key)
        if value is not None and not isinstance(value, DictConfig):
            raise UserError(f"metrics.{key}={value!r} must map direction names to targets, e.g. +metrics.{key}.pc0=...")
    if metrics.get("factor_targets"):
        from hspace.metrics.factor_scores import FactorTarget

        for name, target in metrics.factor_targets.items():
            FactorTarget.parse(str(target), f"metrics.factor_targets.{name}")
    disentanglement = metrics.get("disentanglement")
    if disentanglement is not None and "bins" in disentanglement:
        integer(disentanglement.get("num_images"), "metrics.disentanglement.num_images", 0)
        if disentanglement.num_images:
            integer(disentanglement.get("num_images"), "metrics.disentanglement.num_images", 16)
            integer(disentanglement.get("bins"), "metrics.disentanglement.bins", 2)
    integer(metrics.get("batch_size", 16), "metrics.batch_size", 1)
    boolean(metrics.get("factors", False), "metrics.factors")
    choice(metrics.get("factor_pairs", "valid"), "metrics.factor_pairs", ("object", "valid"))
    # A probability threshold: at 0 or 1 every prediction is on one side, and 50 (a percentage) would be silent.
    number(metrics.get("threshold", 0.5), "metrics.threshold", above=0.0, below=1.0)


def disentanglement_count(metrics: DictConfig) -> int:
    """How many rendered images DCI and MIG are scored on: 0 when the metrics group has no disentanglement section,
    or one without bins, which only an experiment's image count merged into a group that scores no
    disentanglement (experiment=quick metrics=none) has: said in a note."""
    section = metrics.get("disentanglement")
    if section is None or not section.get("num_images"):
        return 0
    if "bins" not in section:
        note(
            f"metrics.disentanglement.num_images={section.num_images} is set, but this metrics group scores no "
            "disentanglement (it has no metrics.disentanglement.bins): no DCI or MIG (metrics=shapes scores them)"
        )
        return 0
    return int(section.num_images)


def note_small_fid_sets(metrics: DictConfig, counts: dict[str, int]) -> None:
    """FID compares sets of images: a set of one is not scored by it (its FID is null), said before any work."""
    fid = metrics.get("fid")
    if fid is None or fid.backend == "none":
        return
    for setting, count in counts.items():
        if count == 1:
            note(f"FID needs at least 2 images and {setting}=1: that set's FID is skipped (null in metrics.json)")


def warn_unread_overrides(overrides: Sequence[str], cfg: DictConfig | None = None) -> None:
    """One line per `+key=value` override that adds a setting no code reads (typos of real settings included). A
    setting added to a node that builds a class (`_target_`) is left to the class, which takes it or refuses it."""
    for override in overrides:
        if not override.startswith("+") or override.startswith("++"):
            continue
        key = override[1:].split("=", 1)[0]
        parent = OmegaConf.select(cfg, key.rpartition(".")[0]) if cfg is not None and "." in key else None
        if isinstance(parent, DictConfig) and "_target_" in parent:
            continue
        if not key.startswith(OPEN_MAPPINGS) and not key.startswith("hydra."):
            note(f"+{key} adds a setting that nothing reads: check its spelling (without + to change an existing one)")


def overrides_of_this_run() -> list[str]:
    """The command-line overrides of the running Hydra job (none outside Hydra's main)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def check_model(model: DictConfig) -> None:
    """The model's weights are on this machine (a Hugging Face id is looked up when the model loads)."""
    from hspace.diffusion.weights import check_model_weights

    check_model_weights(str(model.weights), bool(model.get("adm")))
