"""Run planning: the one place a run's configuration is resolved, before any work.

Fresh: defaults < the ``--config`` file < options. ``--resume``: the run's saved config < options,
refusing what a checkpoint fixes (``RESUME_FIXED``). ``--init-from``: as fresh, with the
checkpoint's model shape unless the file or an option gives one, which must then agree with it.
The worker count is resolved here too, so config.yaml and the checkpoints record what ran.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .checkpoint import (
    Checkpoint,
    find_checkpoint,
    load_checkpoint,
    require_resumable,
)
from .config import FIELD_BY_NAME, Config, read_settings, shape_text, validate_settings
from .errors import TrainError
from .parallel import resolve_workers

# Keys that fix the weights' shapes: on --resume and --init-from they come from the checkpoint.
ARCHITECTURE = (
    "model", "hidden_size", "num_layers", "embedding_size", "conv_size", "mlp_size", "residual",
    "norm",
)  # fmt: skip
# Keys that only say how fresh weights are drawn: a checkpoint's weights are past them, so on
# --resume and --init-from they too are the checkpoint's, recorded as it was trained.
INITIALISATION = ("forget_bias",)
_SHAPE = "the weights in the checkpoint have that shape"
# What --resume refuses to change, and why; every other setting it applies from the next step.
RESUME_FIXED = {
    "model": _SHAPE,
    "hidden_size": _SHAPE,
    "num_layers": _SHAPE,
    "embedding_size": _SHAPE,
    "conv_size": _SHAPE,
    "mlp_size": _SHAPE,
    "residual": "the weights in the checkpoint were trained with that wiring",
    "norm": _SHAPE,
    "forget_bias": "it only sets the initial weights, and the checkpoint's are past that",
    "dtype": "the weights and optimizer moments were saved in that precision",
    "optimizer": "the saved optimizer moments belong to that optimizer",
    "seed": "the random state continues from the checkpoint; a seed only starts a run",
    "encoding": "the vocabulary was read from the corpus in that encoding",
}


@dataclass
class Plan:
    """A run resolved before any work: its configuration, the checkpoint it starts from (resumed,
    or only its weights for ``--init-from``), the settings a resume changes, notes for the user."""

    cfg: Config
    ckpt: Checkpoint | None = None
    resume: bool = False
    changed: dict[str, list] = field(default_factory=dict)  # setting -> [saved, new]
    notes: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.cfg = with_workers(self.cfg)


def with_workers(cfg: Config) -> Config:
    # The resolved count is what config.yaml and the checkpoints record: a resumed run uses the same
    # shards, hence the same order of float additions, and continues bitwise as if never stopped.
    return dataclasses.replace(cfg, workers=resolve_workers(cfg.workers, cfg.batch_size))


# -- resolving the configuration ------------------------------------------------------------------


def resolve_config(
    overrides: Mapping,
    file_settings: Mapping | None = None,
    file_name: str = "config",
    resumed: Checkpoint | None = None,
    init: Checkpoint | None = None,
) -> tuple[Config, dict[str, list], list[str]]:
    """The run's ``Config``, the settings a resume changes and notes; refusals raise TrainError.

    Fresh: defaults < ``file_settings`` (from --config) < ``overrides`` (options). ``resumed``:
    the run's saved config < ``overrides``. ``init``: as fresh, with the checkpoint's shape
    unless the file or an option gives one, which must then agree with it.
    """
    if resumed is not None:
        return _resume_config(resumed, overrides)
    if init is not None:
        return _init_config(init, file_settings or {}, file_name, overrides)
    return with_workers(Config.from_dict(file_settings or {}, file_name, overrides)), {}, []


def _resume_config(ckpt: Checkpoint, overrides: Mapping) -> tuple[Config, dict, list[str]]:
    saved = Config.from_dict(ckpt.config, ckpt.path)
    cfg = with_workers(Config.from_dict(ckpt.config, ckpt.path, overrides))
    changed = {
        k: [getattr(saved, k), getattr(cfg, k)]
        for k in saved.to_dict()
        if getattr(saved, k) != getattr(cfg, k)
    }
    for key, (old, new) in changed.items():
        if key in RESUME_FIXED:
            raise TrainError(
                f"--resume cannot change {key} from {old} to {new}: {RESUME_FIXED[key]} "
                f"({ckpt.path}); start a new run, or --init-from that checkpoint"
            )
    step = ckpt.meta.get("step", 0)
    notes = [f"--resume applies {k} = {new} (was {old}) from step {step + 1}"
             for k, (old, new) in changed.items()]  # fmt: skip
    return cfg, changed, notes


def _init_config(
    ckpt: Checkpoint, file_settings: Mapping, file_name: str, overrides: Mapping
) -> tuple[Config, dict, list]:
    # The shape is checked and taken before the settings are resolved, so that the rules
    # between keys (conv_size's embedding_size) see the checkpoint's shape, not the defaults.
    explicit = {**file_settings, **overrides}
    shape = {k: ckpt.config[k] for k in ARCHITECTURE + INITIALISATION}
    clashes = [k for k in shape if k in explicit and explicit[k] != shape[k]]
    if clashes:
        asked = ", ".join(f"{k} = {explicit[k]}" for k in clashes)
        init = f" initialised with forget_bias {shape['forget_bias']:g}"
        raise TrainError(
            f"--init-from {ckpt.path} holds a model of shape {shape_text(shape)}"
            f"{init if 'forget_bias' in clashes else ''}, but {asked} was asked; leave the "
            "shape out to fine-tune it"
        )
    notes = []
    taken = {k: v for k, v in shape.items() if k not in explicit}
    if any(FIELD_BY_NAME[k].default != v for k, v in taken.items()):
        listed = ", ".join(f"{k}={v}" for k, v in shape.items())
        notes.append(f"model shape taken from {ckpt.path}: {listed}")
    cfg = Config.from_dict({**taken, **file_settings}, file_name, overrides)
    return with_workers(cfg), {}, notes


def plan_run(
    run_dir: Path,
    overrides: Mapping,
    config_path: Path | Mapping | None = None,
    resume: bool = False,
    init_from: Path | None = None,
) -> Plan:
    """Read what the run starts from (--config, last.npz or --init-from's checkpoint) and resolve
    its configuration once, before any work. ``config_path`` may also be a mapping of settings
    (``rnncli.train(config={...})``), which then stands where the file would."""
    if resume:
        if not (run_dir / "last.npz").is_file():
            raise TrainError(f"{run_dir}: no last.npz to resume from")
        ckpt = load_checkpoint(run_dir / "last.npz")
        require_resumable(ckpt)
        cfg, changed, notes = resolve_config(overrides, resumed=ckpt)
        return Plan(cfg, ckpt, resume=True, changed=changed, notes=notes)
    if isinstance(config_path, Mapping):
        settings, source = validate_settings(config_path, "config"), "config"
    else:
        settings = None if config_path is None else read_settings(config_path)
        source = "config" if config_path is None else str(config_path)
    init, found = None, None
    if init_from is not None:
        found = find_checkpoint(init_from)  # a run folder: its best.npz, else last.npz
        init = load_checkpoint(found)
    cfg, _, notes = resolve_config(overrides, settings, source, init=init)
    if found is not None and found != str(init_from):
        notes.insert(0, f"--init-from {init_from}: using {found}")
    return Plan(cfg, init, notes=notes)
