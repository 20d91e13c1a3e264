"""Typed, validated run configurations, loaded from TOML.

A run config describes a whole training run (data, normalization, noise,
patches, architecture, optimizer, schedule, validation, report). It is a tree
of frozen dataclasses validated in ``__post_init__``; it is read from
``pipelines/configs/*.toml`` (never executed), can be overridden from the
command line, and is saved (resolved, every default filled in) into every run
folder and checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A config file or override is invalid; the message says which key."""


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def _range(name: str, pair, lo: float, hi: float) -> tuple[float, float]:
    _check(isinstance(pair, list | tuple) and len(pair) == 2, f"{name} must be [min, max]")
    a, b = float(pair[0]), float(pair[1])
    _check(lo <= a <= b <= hi, f"{name} must satisfy {lo} <= min <= max <= {hi}, got {list(pair)}")
    return a, b


@dataclass(frozen=True)
class DataConfig:
    manifests: tuple[str, ...] = ("data_manifests/chest.json",)
    verify_checksums: bool = True
    max_train_slices: int = 0  # 0 = all training slices

    def __post_init__(self):
        object.__setattr__(self, "manifests", tuple(self.manifests))
        _check(len(self.manifests) > 0, "data.manifests must list at least one manifest")
        _check(self.max_train_slices >= 0, "data.max_train_slices must be >= 0")


@dataclass(frozen=True)
class NormalizationConfig:
    low: float = -1000.0
    high: float = 1000.0
    margin: float = 0.25  # the network sees model space clipped to [-margin, 1 + margin]

    def __post_init__(self):
        _check(math.isfinite(self.margin) and 0 <= self.margin <= 10, "normalization.margin must be in [0, 10]")
        _check(math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high,
               f"normalization needs finite low < high, got {self.low}, {self.high}")


@dataclass(frozen=True)
class NoiseConfig:
    """Noise added on the fly. Each training patch gets Gaussian noise with
    sigma drawn uniformly from ``gaussian_sigma_hu`` or, with probability
    ``low_dose_fraction``, low-dose CT noise with I0 drawn log-uniformly from
    ``low_dose_i0`` (from a bank of simulated realizations, refreshed every
    epoch)."""

    gaussian_sigma_hu: tuple[float, float] = (5.0, 120.0)
    gaussian_log_fraction: float = 0.0  # share drawn log-uniformly instead (patches.gaussian_batch)
    low_dose_fraction: float = 0.0
    low_dose_i0: tuple[float, float] = (3e4, 1e6)
    low_dose_views: int = 720
    low_dose_bank_slices: int = 24  # slices with a low-dose realization at any time
    low_dose_refresh: int = 8  # realizations replaced each epoch
    # Reconstruction filters of the low-dose realizations (one drawn per realization): sharp (ramp)
    # to smooth (hann) noise textures, as scanners' kernels give them.
    low_dose_filters: tuple[str, ...] = ("ramp",)
    # Share of the Gaussian patches whose clean target is a low-dose realization itself (a scan
    # with its own kernel texture, to be kept), not the original slice.
    textured_fraction: float = 0.0
    textured_i0_min: float = 2e5  # only realizations this mild (kernel-like noise, not low dose) serve as targets
    # For a model with a noise-level input: share of patches given their true noise level
    # (the others are blind).
    known_level_fraction: float = 0.5
    # The same for the low-dose patches. Higher than the above, the blind network sees colored noise
    # mostly as texture to keep (a sharp kernel's own noise looks like low-dose noise), white noise as
    # noise to remove.
    known_level_fraction_low_dose: float = 0.5

    def __post_init__(self):
        object.__setattr__(self, "gaussian_sigma_hu",
                           _range("noise.gaussian_sigma_hu", self.gaussian_sigma_hu, 0.0, 1e4))
        object.__setattr__(self, "low_dose_i0", _range("noise.low_dose_i0", self.low_dose_i0, 1.0, 1e9))
        _check(0.0 <= self.low_dose_fraction <= 1.0, "noise.low_dose_fraction must be in [0, 1]")
        _check(0.0 <= self.gaussian_log_fraction <= 1.0, "noise.gaussian_log_fraction must be in [0, 1]")
        _check(self.low_dose_views >= 16, "noise.low_dose_views must be >= 16")
        _check(self.low_dose_bank_slices >= 1, "noise.low_dose_bank_slices must be >= 1")
        _check(0 <= self.low_dose_refresh <= self.low_dose_bank_slices,
               "noise.low_dose_refresh must be in [0, low_dose_bank_slices]")
        from denoise.noise import FBP_FILTERS

        object.__setattr__(self, "low_dose_filters", tuple(self.low_dose_filters))
        _check(len(self.low_dose_filters) > 0 and all(f in FBP_FILTERS for f in self.low_dose_filters),
               f"noise.low_dose_filters must list some of {list(FBP_FILTERS)}, got {list(self.low_dose_filters)}")
        _check(0.0 <= self.textured_fraction <= 1.0, "noise.textured_fraction must be in [0, 1]")
        _check(math.isfinite(self.textured_i0_min) and self.textured_i0_min > 0, "noise.textured_i0_min must be > 0")
        _check(0.0 <= self.known_level_fraction <= 1.0, "noise.known_level_fraction must be in [0, 1]")
        _check(0.0 <= self.known_level_fraction_low_dose <= 1.0,
               "noise.known_level_fraction_low_dose must be in [0, 1]")


@dataclass(frozen=True)
class PatchConfig:
    size: int = 64
    batch_size: int = 16
    per_epoch: int = 4096
    min_body_fraction: float = 0.3  # skip patches that are mostly air
    augment: bool = True  # flips and 90-degree rotations
    # Share of Gaussian-noise patches that get a region set to air/padding with a
    # perfectly sharp border (patches.hard_edge_batch), and that region's HU range.
    hard_edge_fraction: float = 0.0
    hard_edge_hu: tuple[float, float] = (-1024.0, -1000.0)

    def __post_init__(self):
        _check(8 <= self.size <= 1024, "patches.size must be in [8, 1024]")
        _check(self.batch_size >= 1, "patches.batch_size must be >= 1")
        _check(self.per_epoch >= self.batch_size, "patches.per_epoch must be >= patches.batch_size")
        _check(0.0 <= self.min_body_fraction <= 1.0, "patches.min_body_fraction must be in [0, 1]")
        _check(0.0 <= self.hard_edge_fraction <= 1.0, "patches.hard_edge_fraction must be in [0, 1]")
        object.__setattr__(self, "hard_edge_hu", _range("patches.hard_edge_hu", self.hard_edge_hu, -1e4, 1e4))


@dataclass(frozen=True)
class OptimizerConfig:
    kind: str = "adam"
    lr: float = 1e-3
    min_lr: float = 1e-5
    schedule: str = "cosine"  # "cosine" or "constant", after a linear warm-up
    warmup_steps: int = 100
    weight_decay: float = 0.0
    momentum: float = 0.9  # SGD only
    grad_clip: float = 1.0  # max global gradient norm; 0 disables

    def __post_init__(self):
        _check(self.kind in ("adam", "sgd"), f"optimizer.kind must be 'adam' or 'sgd', got {self.kind!r}")
        _check(self.schedule in ("cosine", "constant"),
               f"optimizer.schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        _check(0 < self.lr < 1, "optimizer.lr must be in (0, 1)")
        _check(0 <= self.min_lr <= self.lr, "optimizer.min_lr must be in [0, lr]")
        _check(self.warmup_steps >= 0 and self.weight_decay >= 0 and self.grad_clip >= 0,
               "optimizer.warmup_steps, weight_decay and grad_clip must be >= 0")


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int = 20
    seed: int = 0
    loss: str = "l2"
    early_stopping: int = 0  # epochs without validation improvement; 0 disables
    device: str = "cpu"
    # Warm start: a saved model (path without .npz, relative to the working
    # folder) whose weights replace the random initialization; "" starts fresh.
    init: str = ""

    def __post_init__(self):
        _check(self.epochs >= 1, "training.epochs must be >= 1")
        _check(self.loss in ("l2", "l1"), f"training.loss must be 'l2' or 'l1', got {self.loss!r}")
        _check(self.early_stopping >= 0, "training.early_stopping must be >= 0")
        _check(self.device in ("cpu", "gpu"), f"training.device must be 'cpu' or 'gpu', got {self.device!r}")


@dataclass(frozen=True)
class ValidationConfig:
    """Full validation slices with fixed noise (same every epoch)."""

    sigma_hu: float = 50.0
    low_dose_i0: float = 0.0  # > 0 adds a low-dose copy of each slice
    max_slices: int = 8
    seed: int = 1234
    window: tuple[float, float] = (-1000.0, 1000.0)  # metric window, HU

    def __post_init__(self):
        _check(self.sigma_hu > 0, "validation.sigma_hu must be > 0")
        _check(self.low_dose_i0 >= 0, "validation.low_dose_i0 must be >= 0")
        _check(self.max_slices >= 1, "validation.max_slices must be >= 1")
        object.__setattr__(self, "window", _range("validation.window", self.window, -1e5, 1e5))


@dataclass(frozen=True)
class ReportConfig:
    gif: bool = True
    display_window: tuple[float, float] = (-160.0, 240.0)  # soft-tissue window for pictures

    def __post_init__(self):
        object.__setattr__(self, "display_window",
                           _range("report.display_window", self.display_window, -1e5, 1e5))


@dataclass(frozen=True)
class RunConfig:
    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    normalization: NormalizationConfig = field(default_factory=NormalizationConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    patches: PatchConfig = field(default_factory=PatchConfig)
    model: dict = field(default_factory=dict)  # architecture overrides on the model's DEFAULT_ARCH
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


_SECTIONS = {f.name: f.default_factory for f in fields(RunConfig) if f.name not in ("name", "model")}


def config_from_dict(data: dict) -> RunConfig:
    """Build and validate a RunConfig; unknown sections or keys are errors."""
    unknown = set(data) - set(_SECTIONS) - {"name", "model"}
    _check(not unknown, f"unknown config section(s): {', '.join(sorted(unknown))}")
    kwargs: dict[str, Any] = {"name": str(data.get("name", "run")), "model": dict(data.get("model", {}))}
    for section, factory in _SECTIONS.items():
        values = data.get(section, {})
        _check(isinstance(values, dict), f"[{section}] must be a table")
        cls = type(factory())
        allowed = {f.name: f for f in fields(cls)}
        bad = set(values) - set(allowed)
        _check(not bad, f"unknown key(s) in [{section}]: {', '.join(sorted(bad))}")
        try:
            kwargs[section] = cls(**{k: _coerce(section, k, v, allowed[k]) for k, v in values.items()})
        except TypeError as exc:
            raise ConfigError(f"[{section}]: {exc}") from exc
    return RunConfig(**kwargs)


def _coerce(section: str, key: str, value, f: dataclasses.Field):
    """Check a TOML value against the field's default type (int/float/bool/str/sequence)."""
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    name = f"{section}.{key}"
    if isinstance(default, bool):
        _check(isinstance(value, bool), f"{name} must be true or false")
    elif isinstance(default, int):
        _check(isinstance(value, int) and not isinstance(value, bool), f"{name} must be an integer")
    elif isinstance(default, float):
        _check(isinstance(value, int | float) and not isinstance(value, bool), f"{name} must be a number")
        value = float(value)
    elif isinstance(default, str):
        _check(isinstance(value, str), f"{name} must be a string")
    elif isinstance(default, tuple):
        _check(isinstance(value, list | tuple), f"{name} must be a list")
        value = tuple(value)
    return value


def load_config(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a TOML run config and apply ``{"section.key": value}`` overrides."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror or exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from exc
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        _check(bool(key), f"override {dotted!r} must look like 'section.key'")
        data.setdefault(section, {})[key] = value
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def to_toml(data: dict) -> str:
    """Serialize a config dict (scalars, lists, one level of tables) as TOML."""
    lines, tables = [], []
    for key, value in data.items():
        (tables if isinstance(value, dict) else lines).append((key, value))
    out = [f"{k} = {_toml_value(v)}" for k, v in lines]
    for key, table in tables:
        out.append(f"\n[{key}]")
        out += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(out) + "\n"


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if value is None:
        raise ConfigError("TOML has no null; use a default instead")
    raise ConfigError(f"cannot write {type(value).__name__} to TOML")
