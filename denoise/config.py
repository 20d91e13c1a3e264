"""Typed, validated run configurations, loaded from TOML.

A run config describes a whole training run (data, normalization, noise,
patches, architecture, optimizer, schedule, validation, report). It is a tree
of frozen pydantic models: unknown keys are errors, numbers must be finite,
``true`` is not a number and ``1`` is not a boolean, every bound is checked.
It is read from ``pipelines/configs/*.toml`` (never executed), can be
overridden from the command line, and is saved (resolved, every default
filled in, written with tomli-w) into every run folder and checkpoint. Every
error is one line naming the key path, e.g.
``noise.gaussian_sigma_hu[0]: must be a number, got 'a'``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A config file or override is invalid; the message says which key."""


# Strict scalars: a float field takes ints but not booleans and never inf/nan;
# an int field takes neither floats nor booleans; a bool field only true/false.
Num = Annotated[float, Strict(), Field(allow_inf_nan=False)]
Int = Annotated[int, Strict()]
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]
Pair = tuple[Num, Num]


def _pair(name: str, pair: tuple[float, float], lo: float, hi: float) -> tuple[float, float]:
    a, b = pair
    if not lo <= a <= b <= hi:
        raise ValueError(f"must satisfy {lo:g} <= min <= max <= {hi:g}, got {list(pair)}")
    return pair


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, validate_default=True)


class DataConfig(_Section):
    manifests: tuple[Str, ...] = ("data_manifests/chest.json",)
    verify_checksums: Bool = True
    max_train_slices: Annotated[Int, Field(ge=0)] = 0  # 0 = all training slices

    @field_validator("manifests")
    @classmethod
    def _some(cls, v):
        if not v:
            raise ValueError("must list at least one manifest")
        return v


class NormalizationConfig(_Section):
    low: Num = -1000.0
    high: Num = 1000.0
    margin: Annotated[Num, Field(ge=0, le=10)] = 0.25  # the network sees model space clipped to [-margin, 1 + margin]

    @model_validator(mode="after")
    def _order(self):
        if not self.low < self.high:
            raise ValueError(f"normalization needs low < high, got {self.low:g}, {self.high:g}")
        return self


Fraction = Annotated[Num, Field(ge=0, le=1)]


class NoiseConfig(_Section):
    """Noise added on the fly. Each training patch gets Gaussian noise with
    sigma drawn uniformly from ``gaussian_sigma_hu`` or, with probability
    ``low_dose_fraction``, low-dose CT noise with I0 drawn log-uniformly from
    ``low_dose_i0`` (from a bank of simulated realizations, refreshed every
    epoch)."""

    gaussian_sigma_hu: Pair = (5.0, 120.0)
    gaussian_log_fraction: Fraction = 0.0  # share drawn log-uniformly instead (patches.gaussian_batch)
    low_dose_fraction: Fraction = 0.0
    low_dose_i0: Pair = (3e4, 1e6)
    low_dose_views: Annotated[Int, Field(ge=16)] = 720
    low_dose_bank_slices: Annotated[Int, Field(ge=1)] = 24  # slices with a low-dose realization at any time
    low_dose_refresh: Annotated[Int, Field(ge=0)] = 8  # realizations replaced each epoch
    # Reconstruction filters of the low-dose realizations (one drawn per realization): sharp (ramp)
    # to smooth (hann) noise textures, as scanners' kernels give them.
    low_dose_filters: tuple[Str, ...] = ("ramp",)
    # Share of the Gaussian patches whose clean target is a low-dose realization itself (a scan
    # with its own kernel texture, to be kept), not the original slice.
    textured_fraction: Fraction = 0.0
    textured_i0_min: Annotated[Num, Field(gt=0)] = 2e5  # only realizations this mild serve as targets
    # For a model with a noise-level input: share of patches given their true noise level
    # (the others are blind).
    known_level_fraction: Fraction = 0.5
    # The same for the low-dose patches. Higher than the above, the blind network sees colored noise
    # mostly as texture to keep (a sharp kernel's own noise looks like low-dose noise), white noise as
    # noise to remove.
    known_level_fraction_low_dose: Fraction = 0.5
    # Scan-matched noise (denoise.scanner_noise): that share of the patches gets noise synthesized
    # from a noise model measured on a training series (its spectrum and SD map), scaled as a dose
    # reduction to a fraction drawn log-uniformly from scanner_dose of the scan's own dose (added
    # SD = sqrt(1/f - 1) x the measured SD); the scan itself, with its own noise, is the target.
    scanner_fraction: Fraction = 0.0
    scanner_dose: Pair = (0.1, 0.5)
    scanner_bank_slices: Annotated[Int, Field(ge=1)] = 32  # slices with a synthesized realization
    scanner_refresh: Annotated[Int, Field(ge=0)] = 8  # realizations replaced each epoch
    # 2.5-D models: share of the patches shown without their neighbours (the slice stands in for
    # them), as single files and thick slices are denoised.
    context_dropout: Fraction = 0.25

    @field_validator("gaussian_sigma_hu")
    @classmethod
    def _sigma(cls, v):
        return _pair("gaussian_sigma_hu", v, 0.0, 1e4)

    @field_validator("low_dose_i0")
    @classmethod
    def _i0(cls, v):
        return _pair("low_dose_i0", v, 1.0, 1e9)

    @field_validator("low_dose_filters")
    @classmethod
    def _filters(cls, v):
        from denoise.noise import FBP_FILTERS

        if not v or any(f not in FBP_FILTERS for f in v):
            raise ValueError(f"must list some of {list(FBP_FILTERS)}, got {list(v)}")
        return v

    @field_validator("scanner_dose")
    @classmethod
    def _dose(cls, v):
        return _pair("scanner_dose", v, 1e-3, 1.0)

    @model_validator(mode="after")
    def _refresh(self):
        if self.low_dose_refresh > self.low_dose_bank_slices:
            raise ValueError("noise.low_dose_refresh must be in [0, low_dose_bank_slices]")
        if self.scanner_refresh > self.scanner_bank_slices:
            raise ValueError("noise.scanner_refresh must be in [0, scanner_bank_slices]")
        return self


class PatchConfig(_Section):
    size: Annotated[Int, Field(ge=8, le=1024)] = 64
    batch_size: Annotated[Int, Field(ge=1)] = 16
    per_epoch: Annotated[Int, Field(ge=1)] = 4096
    min_body_fraction: Fraction = 0.3  # skip patches that are mostly air
    augment: Bool = True  # flips and 90-degree rotations
    # Share of Gaussian-noise patches that get a region set to air/padding with a
    # perfectly sharp border (patches.hard_edge_batch), and that region's HU range.
    hard_edge_fraction: Fraction = 0.0
    hard_edge_hu: Pair = (-1024.0, -1000.0)

    @field_validator("hard_edge_hu")
    @classmethod
    def _edge(cls, v):
        return _pair("hard_edge_hu", v, -1e4, 1e4)

    @model_validator(mode="after")
    def _epoch(self):
        if self.per_epoch < self.batch_size:
            raise ValueError("patches.per_epoch must be >= patches.batch_size")
        return self


class OptimizerConfig(_Section):
    kind: Annotated[Str, Field(pattern="^(adam|sgd)$")] = "adam"
    lr: Annotated[Num, Field(gt=0, lt=1)] = 1e-3
    min_lr: Annotated[Num, Field(ge=0)] = 1e-5
    schedule: Annotated[Str, Field(pattern="^(cosine|constant)$")] = "cosine"  # after a linear warm-up
    warmup_steps: Annotated[Int, Field(ge=0)] = 100
    weight_decay: Annotated[Num, Field(ge=0)] = 0.0
    momentum: Annotated[Num, Field(ge=0, lt=1)] = 0.9  # SGD only
    grad_clip: Annotated[Num, Field(ge=0)] = 1.0  # max global gradient norm; 0 disables

    @model_validator(mode="after")
    def _min_lr(self):
        if self.min_lr > self.lr:
            raise ValueError("optimizer.min_lr must be in [0, lr]")
        return self


class TrainingConfig(_Section):
    epochs: Annotated[Int, Field(ge=1)] = 20
    seed: Annotated[Int, Field(ge=0)] = 0
    loss: Annotated[Str, Field(pattern="^(l2|l1)$")] = "l2"
    early_stopping: Annotated[Int, Field(ge=0)] = 0  # epochs without validation improvement; 0 disables
    device: Annotated[Str, Field(pattern="^(cpu|gpu)$")] = "cpu"
    # Warm start: a saved model (path without .npz, relative to the working
    # folder) whose weights replace the random initialization; "" starts fresh.
    init: Str = ""


class ValidationConfig(_Section):
    """Full validation slices with fixed noise (same every epoch)."""

    sigma_hu: Annotated[Num, Field(gt=0)] = 50.0
    low_dose_i0: Annotated[Num, Field(ge=0)] = 0.0  # > 0 adds a low-dose copy of each slice
    max_slices: Annotated[Int, Field(ge=1)] = 8
    seed: Annotated[Int, Field(ge=0)] = 1234
    window: Pair = (-1000.0, 1000.0)  # metric window, HU

    @field_validator("window")
    @classmethod
    def _window(cls, v):
        return _pair("window", v, -1e5, 1e5)


class ReportConfig(_Section):
    gif: Bool = True
    display_window: Pair = (-160.0, 240.0)  # soft-tissue window for pictures

    @field_validator("display_window")
    @classmethod
    def _window(cls, v):
        return _pair("display_window", v, -1e5, 1e5)


class RunConfig(_Section):
    name: Str = "run"
    data: DataConfig = DataConfig()
    normalization: NormalizationConfig = NormalizationConfig()
    noise: NoiseConfig = NoiseConfig()
    patches: PatchConfig = PatchConfig()
    model: dict[str, Any] = {}  # architecture overrides on the model's DEFAULT_ARCH (checked by the model)
    optimizer: OptimizerConfig = OptimizerConfig()
    training: TrainingConfig = TrainingConfig()
    validation: ValidationConfig = ValidationConfig()
    report: ReportConfig = ReportConfig()

    def to_dict(self) -> dict:
        """Plain data (lists, not tuples), every default filled in."""
        return _plain(self.model_dump())


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


_MESSAGES = {"float_type": "must be a number", "int_type": "must be an integer", "bool_type": "must be true or false",
             "string_type": "must be a string", "finite_number": "must be a finite number",
             "extra_forbidden": "unknown key", "tuple_type": "must be a list", "dict_type": "must be a table",
             "model_type": "must be a table", "int_from_float": "must be an integer"}


def _key_path(loc: tuple) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def describe(exc: ValidationError) -> str:
    """A pydantic error as one line: ``key.path: what is wrong, got VALUE``, errors joined by '; '."""
    parts = []
    for e in exc.errors():
        msg = _MESSAGES.get(e["type"]) or e["msg"].removeprefix("Value error, ")
        where = _key_path(e["loc"])
        got = "" if e["type"] in ("extra_forbidden", "missing") or e["type"].startswith("value_error") \
            else f", got {e['input']!r}"
        parts.append(f"{where}: {msg}{got}" if where else f"{msg}{got}")
    return "; ".join(parts)


def options_error(exc: ValidationError, option: Callable[[str], str], units: Mapping[str, str] | None = None) -> str:
    """A pydantic error of a job's options as one line naming the command-line
    option: a check's own message as it is; a bound as ``--minutes must be > 0,
    got -1.0`` (``units`` by field: ``--noise-sd must be > 0 HU``); anything
    else as ``--option: what is wrong, got VALUE``. ``option(field)`` names the
    option of a field."""
    parts = []
    for e in exc.errors():
        if e["type"] == "value_error" or not e["loc"]:
            parts.append(e["msg"].removeprefix("Value error, "))
            continue
        field = str(e["loc"][0])
        name, unit = option(field), (units or {}).get(field, "")
        bound = {k: v for k, v in (e.get("ctx") or {}).items() if k in ("gt", "ge", "lt", "le")}
        got = "" if e["type"] in ("extra_forbidden", "missing") else f", got {e['input']!r}"
        if bound:
            (kind, value), = bound.items()
            parts.append(f"{name} must be {_BOUNDS[kind]} {value:g}{unit}{got}")
        elif e["type"] == "finite_number":
            parts.append(f"{name} must be a finite number{got}")
        else:
            parts.append(f"{name}: {'unknown option' if e['type'] == 'extra_forbidden' else e['msg'].lower()}{got}")
    return "; ".join(parts)


_BOUNDS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def config_from_dict(data: dict) -> RunConfig:
    """Build and validate a RunConfig; unknown sections or keys are errors."""
    if not isinstance(data, dict):
        raise ConfigError("a config must be a table")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe(exc)) from None


def load_config(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a TOML run config and apply ``{"section.key": value}`` overrides."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror or exc})") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: invalid TOML ({' '.join(str(exc).split())})") from exc
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if not key:
            raise ConfigError(f"override {dotted!r} must look like 'section.key'")
        table = data.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {section}: must be a table")
        table[key] = value
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def train_overrides(*, epochs: int | None = None, lr: float | None = None, patch_size: int | None = None,
                    batch_size: int | None = None, seed: int | None = None,
                    device: str | None = None) -> dict[str, Any]:
    """``ct-denoise train``'s override options as :func:`load_config`
    overrides (``{"section.key": value}``), those given only."""
    given = {"training.epochs": epochs, "optimizer.lr": lr, "patches.size": patch_size,
             "patches.batch_size": batch_size, "training.seed": seed,
             "training.device": None if device is None else str(device)}
    return {k: v for k, v in given.items() if v is not None}


def to_toml(data: dict) -> str:
    """Serialize a config dict as TOML (tomli-w: strings are escaped, so any
    name round-trips through tomllib). None values cannot be written."""
    try:
        return tomli_w.dumps(_plain(data))
    except TypeError as exc:
        raise ConfigError(f"cannot write to TOML: {exc}") from exc
