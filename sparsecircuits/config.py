"""Run configuration: plain dataclasses, read from TOML or JSON, with dotted overrides.

A config is six sections, each a dataclass: ``model``, ``sparsity``, ``optimizer``, ``data``,
``schedule`` and ``run``. Files and ``--set section.field=value`` overrides are checked field by
field: an unknown key, a wrong type or an impossible value raises :class:`ConfigError` naming the
field (``model.d_model``), before anything is written. Built-in presets live in :data:`PRESETS`.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ACT_SPARSITY_SITES = (
    "ln1.hook_normalized",
    "attn.hook_q",
    "attn.hook_k",
    "attn.hook_v",
    "hook_attn_out",
    "ln2.hook_normalized",
    "mlp.hook_post",
    "hook_mlp_out",
)
"""Per-block hook sites where activation sparsity may apply (suffixes of ``blocks.{i}.``)."""

KernelBackend = Literal["auto", "triton", "torch", "dense"]
AnnealShape = Literal["linear", "loglinear"]
Decay = Literal["linear", "constant"]
ScheduleKind = Literal["round_robin", "shuffled", "iid", "interleave", "reverse", "ping_pong"]


class ConfigError(ValueError):
    """A config value that cannot be used; the message starts with the field's dotted name."""


@dataclass
class ModelConfig:
    """A small pre-norm GPT (Gao et al. 2025): RMSNorm, GELU MLP, untied unembedding."""

    vocab_size: int = 99
    n_ctx: int = 64
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 8
    d_head: int = 16
    d_mlp: int = 512
    attn_sink: bool = False
    """A learnable per-head logit on an empty key/value slot, so a head may attend nowhere."""
    bigram: bool = False
    """A dense vocab x vocab logit table. Off by default: it can carry task behaviour that no
    circuit shows."""
    act_sparsity: float = 0.0
    """Fraction of channels kept per token (top-k of |x|) at ``act_sparsity_sites``; 0 is off."""
    act_sparsity_sites: list[str] = field(default_factory=lambda: list(ACT_SPARSITY_SITES))
    init_std: float = 0.02
    kernel_backend: KernelBackend = "auto"
    """How weight-sparse products run: ``auto`` (the measured dispatcher), ``triton``,
    ``torch`` (the sparse torch twin) or ``dense``."""


@dataclass
class SparsityConfig:
    """Top-k magnitude projection after every optimizer step, annealed from dense."""

    enabled: bool = True
    matrix_density: float = 1 / 16
    """Target fraction of nonzeros in every weight matrix."""
    embed_density: float = 1 / 4
    """Target fraction of nonzeros in embeddings, the unembedding and every bias."""
    min_per_neuron: int = 4
    """Floor of nonzeros kept on every row (fan-in) and column (fan-out) of a matrix."""
    anneal_start: float = 0.0
    """Fraction of training at which the budget starts to shrink from dense."""
    anneal_end: float = 0.5
    """Fraction of training at which the budget reaches its target."""
    anneal_shape: AnnealShape = "linear"
    """``linear`` in density or ``loglinear`` (linear in log density)."""


@dataclass
class OptimizerConfig:
    """AdamW with decoupled weight decay, the sharkfin learning rate and unit-RMS gradients."""

    lr: float = 1e-2
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    warmup: float = 0.01
    """Fraction of training with a linear learning-rate warm-up."""
    decay: Decay = "linear"
    """``linear`` decay to zero at the end, or ``constant`` after the sparsity anneal (decay
    confounds position in a cyclic schedule)."""
    sharkfin: bool = True
    """Multiply the learning rate by sqrt(final density / current density)."""
    normalize_grad: bool = True
    """Rescale the global gradient to unit RMS before every step."""
    reset_at_block: bool = False
    """Forget the AdamW moments at every block boundary (Yang et al.'s optimizer reset)."""


@dataclass
class DataConfig:
    """What fills a batch: rows of the scheduled source plus rows of corpus text."""

    source_rows: int = 32
    """Rows per step from the source the schedule names (a task or a document)."""
    lm_rows: int = 32
    """Rows per step of language-modelling windows from the training corpus."""
    corpus_root: str = ""
    """Folder of .py files; empty means the running interpreter's standard library."""
    holdout_every: int = 20
    documents: int = 0
    """How many corpus documents may be named as sources (``doc:0`` ...)."""
    document_windows: int = 8
    """Fixed windows per document source: the same text every step it is trained."""
    eval_examples: int = 256
    """Fixed evaluation examples per task."""
    eval_windows: int = 64
    """Fixed held-out corpus windows for the language-modelling evaluation."""


@dataclass
class ScheduleConfig:
    """Which source is trained at every step: blocks of M steps, K sources, E cycles."""

    kind: ScheduleKind = "round_robin"
    sources: list[str] = field(default_factory=list)
    steps_per_block: int = 50
    cycles: int = 4
    granularity: int = 1
    """``interleave`` only: switch source every g steps."""
    warmup_steps: int = 0
    """Steps before the cycles whose every batch mixes all sources (split at random)."""
    skip: list[list[Any]] = field(default_factory=list)
    """``[source, cycle]`` pairs: leave that source out of that cycle."""
    seed: int = 0


@dataclass
class RunConfig:
    """Bookkeeping: seed, logging and checkpoint cadence."""

    seed: int = 0
    log_every: int = 10
    save_every: int = 0
    """Extra checkpoints every N steps (0: only at block boundaries and the end)."""
    threads: int = 0
    """torch threads; 0 keeps torch's default."""
    device: str = "cpu"
    """Where the model trains: ``cpu`` or ``cuda`` (``cuda:N``). Batches are drawn on the CPU,
    checkpoints hold CPU tensors, circuits are extracted on the CPU."""


@dataclass
class Config:
    """A whole run: every section, resolved."""

    model: ModelConfig = field(default_factory=ModelConfig)
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict, as saved in ``config.json``."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------
# Presets

_TASKS = ["quote", "bracket_depth", "set_or_string", "closer", "indent", "flag_flip"]

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "model": {"n_layers": 2, "d_model": 128, "n_heads": 8, "d_mlp": 512, "n_ctx": 64},
        "schedule": {"sources": _TASKS, "steps_per_block": 25, "cycles": 3, "warmup_steps": 200},
        "data": {"source_rows": 32, "lm_rows": 16},
        "sparsity": {"anneal_end": 0.3},
        "optimizer": {"decay": "constant"},
    },
    "small": {
        "model": {"n_layers": 4, "d_model": 256, "n_heads": 16, "d_mlp": 1024, "n_ctx": 64},
        "schedule": {"sources": _TASKS, "steps_per_block": 100, "cycles": 4, "warmup_steps": 2000},
        "data": {"source_rows": 32, "lm_rows": 32},
        "sparsity": {"matrix_density": 1 / 32, "embed_density": 1 / 8, "anneal_end": 0.4},
        "optimizer": {"decay": "constant"},
    },
    # Gao et al. 2025's recipe at the tiny preset's size: docs/gao2025_deviations.md lists
    # every remaining difference and why.
    "gao2025": {
        "model": {"n_layers": 2, "d_model": 128, "n_heads": 8, "d_head": 16, "d_mlp": 512,
                  "n_ctx": 64, "act_sparsity": 0.25, "act_sparsity_sites": list(ACT_SPARSITY_SITES),
                  "bigram": True, "attn_sink": False, "init_std": 0.02},
        "sparsity": {"matrix_density": 1 / 16, "embed_density": 1 / 16, "min_per_neuron": 4,
                     "anneal_start": 0.01, "anneal_end": 0.5, "anneal_shape": "linear"},
        "optimizer": {"lr": 1.28e-2, "beta1": 0.9, "beta2": 0.95, "eps": 0.1,
                      "weight_decay": 0.1, "warmup": 0.01, "decay": "linear", "sharkfin": True,
                      "normalize_grad": True, "reset_at_block": False},
        # The anneal (first half of training) ends exactly as the cycles begin.
        "schedule": {"sources": _TASKS, "steps_per_block": 25, "cycles": 3, "warmup_steps": 450},
        "data": {"source_rows": 32, "lm_rows": 16},
    },
}


# --------------------------------------------------------------------------------------------
# Reading and checking


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, name: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted where floats are."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        options = typing.get_args(tp)
        if value not in options:
            field_name = name.rsplit(".", 1)[-1]
            raise ConfigError(f"{name}: unknown {field_name} {value!r}; expected one of "
                              f"{', '.join(options)}")
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, f"{name}[{i}]") for i, v in enumerate(value)]
    if origin in (types.UnionType, typing.Union):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, name)
            except ConfigError:
                continue
        raise ConfigError(f"{name}: {value!r} is not a {tp}")
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name}: expected a finite number, got {value!r}")
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    if tp is int and isinstance(value, bool):
        raise ConfigError(f"{name}: expected an integer, got {value!r}")
    if not isinstance(value, tp):
        raise ConfigError(f"{name}: expected {_type_name(tp)}, got {value!r}")
    return value


def _update_section(section: Any, values: dict[str, Any], prefix: str) -> None:
    hints = typing.get_type_hints(type(section))
    for key, value in values.items():
        name = f"{prefix}.{key}"
        if key not in hints:
            close = difflib.get_close_matches(key, hints, n=1)
            hint = f" (did you mean {prefix}.{close[0]}?)" if close else ""
            raise ConfigError(f"{name}: unknown key{hint}")
        setattr(section, key, _coerce(value, hints[key], name))


def config_from_dict(data: dict[str, Any], base: Config | None = None) -> Config:
    """Overlay a nested dict on ``base`` (default values if None), checking every field."""
    config = json_roundtrip(base) if base else Config()
    for section_name, values in data.items():
        if section_name not in {f.name for f in dataclasses.fields(Config)}:
            raise ConfigError(f"{section_name}: unknown section (sections: {_sections()})")
        if not isinstance(values, dict):
            raise ConfigError(f"{section_name}: expected a table of fields, got {values!r}")
        _update_section(getattr(config, section_name), values, section_name)
    return config


def json_roundtrip(config: Config) -> Config:
    """A deep copy of ``config`` made through its plain-dict form."""
    copy = Config()
    for section_name, values in config.to_dict().items():
        _update_section(getattr(copy, section_name), values, section_name)
    return copy


def _sections() -> str:
    return ", ".join(f.name for f in dataclasses.fields(Config))


def parse_override(text: str) -> dict[str, Any]:
    """``'model.d_model=128'`` -> ``{'model': {'d_model': 128}}``; values parse as JSON if
    they can, else stay strings."""
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) != 2 or not all(parts):
        raise ConfigError(f"--set {text!r}: expected section.field=value")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return {parts[0]: {parts[1]: value}}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The nested dict in a ``.toml`` or ``.json`` file; errors name the file."""
    path = Path(path)
    if path.suffix not in (".toml", ".json"):
        raise ConfigError(f"{path}: config files must end in .toml or .json")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config ({err.strerror})") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}); save it as UTF-8") from err
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: not valid {path.suffix[1:].upper()}: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a table of sections ({_sections()}) at the top, "
                          f"got a {type(data).__name__}")
    return data


def load_config(preset_or_path: str, overrides: list[str] = ()) -> Config:
    """Resolve a preset name or a config file, apply ``--set`` overrides, and validate."""
    if preset_or_path in PRESETS:
        config = config_from_dict(PRESETS[preset_or_path])
    elif Path(preset_or_path).suffix in (".toml", ".json"):
        data = read_config_file(preset_or_path)
        preset = data.pop("preset", None)
        if preset is not None and preset not in PRESETS:
            raise ConfigError(f"preset: unknown preset {preset!r} (known: {', '.join(PRESETS)})")
        config = config_from_dict(data, config_from_dict(PRESETS[preset]) if preset else None)
    else:
        raise ConfigError(
            f"{preset_or_path}: neither a preset ({', '.join(PRESETS)}) nor a .toml/.json file"
        )
    for text in overrides:
        config = config_from_dict(parse_override(text), config)
    validate(config)
    return config


def _require(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{name}: {message}")


def validate(config: Config) -> None:
    """Raise :class:`ConfigError` on the first impossible value, naming its field.

    The schedule section is checked where it is built (``schedules.build_schedule``),
    and its source names against the task registry when a run is prepared."""
    m, s, o, d, r = config.model, config.sparsity, config.optimizer, config.data, config.run
    for name in ("vocab_size", "n_ctx", "d_model", "n_layers", "n_heads", "d_head", "d_mlp"):
        _require(getattr(m, name) >= 1, f"model.{name}", "must be at least 1")
    _require(0.0 <= m.act_sparsity <= 1.0, "model.act_sparsity", "must lie in [0, 1]")
    for i, site in enumerate(m.act_sparsity_sites):
        _require(site in ACT_SPARSITY_SITES, f"model.act_sparsity_sites[{i}]",
                 f"unknown site {site!r} (sites: {', '.join(ACT_SPARSITY_SITES)})")
    _require(m.init_std > 0, "model.init_std", "must be positive")
    for name in ("matrix_density", "embed_density"):
        _require(0.0 < getattr(s, name) <= 1.0, f"sparsity.{name}", "must lie in (0, 1]")
    _require(s.min_per_neuron >= 0, "sparsity.min_per_neuron", "must be at least 0")
    _require(0.0 <= s.anneal_start <= s.anneal_end <= 1.0, "sparsity.anneal_end",
             "need 0 <= anneal_start <= anneal_end <= 1")
    _require(o.lr > 0, "optimizer.lr", "must be positive")
    _require(0 <= o.beta1 < 1, "optimizer.beta1", "must lie in [0, 1)")
    _require(0 <= o.beta2 < 1, "optimizer.beta2", "must lie in [0, 1)")
    _require(o.eps > 0, "optimizer.eps", "must be positive")
    _require(o.weight_decay >= 0, "optimizer.weight_decay", "must be at least 0")
    _require(0 <= o.warmup <= 1, "optimizer.warmup", "must lie in [0, 1]")
    _require(d.source_rows >= 1, "data.source_rows", "must be at least 1")
    _require(d.lm_rows >= 0, "data.lm_rows", "must be at least 0")
    _require(d.holdout_every >= 2, "data.holdout_every", "must be at least 2")
    _require(d.documents >= 0, "data.documents", "must be at least 0")
    for name in ("document_windows", "eval_examples", "eval_windows"):
        _require(getattr(d, name) >= 1, f"data.{name}", "must be at least 1")
    _require(r.log_every >= 1, "run.log_every", "must be at least 1")
    _require(r.save_every >= 0, "run.save_every", "must be at least 0")
    _require(0 <= r.threads <= (os.cpu_count() or 1), "run.threads",
             f"must lie in [0, {os.cpu_count() or 1}] (this machine's CPUs; 0: torch's default)")
    _require(re.fullmatch(r"cpu|cuda(:\d+)?", r.device) is not None, "run.device",
             f"must be 'cpu', 'cuda' or 'cuda:N', got {r.device!r}")
