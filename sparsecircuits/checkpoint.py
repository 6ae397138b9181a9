"""Checkpoints and run-directory files, written atomically and checked when read.

A checkpoint is a folder ``RunDir.checkpoint(step)`` (:mod:`sparsecircuits.rundir`) holding

- ``model.safetensors``: dense tensors as they are; each weight-sparse tensor compactly, as
  ``<name>.indices`` (int32 flat positions of its mask) and ``<name>.values``;
- ``state.safetensors``: what an exact resume needs (AdamW moments, sparsity masks). Only the
  :data:`RESUMABLE` newest checkpoints keep it (so a damaged newest one falls back to the one
  before);
- ``meta.json``: step, cycle, block, source, position, densities, churn, and the size and
  SHA-256 of every file.

A checkpoint is written into ``RunDir.partial_checkpoint(step)`` and renamed into place when
complete, so a kill during a save leaves the previous checkpoint as it was. Reading checks the
format marker, sizes and hashes, and says which file is truncated or foreign.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import Tensor

from sparsecircuits.config import Config, ConfigError, config_from_dict
from sparsecircuits.model import SparseGPT
from sparsecircuits.rundir import META_FILE, MODEL_FILE, STATE_FILE, RunDir

FORMAT = "sparsecircuits-checkpoint"
VERSION = 1
RESUMABLE = 2
"""How many of the newest checkpoints keep their resume state."""


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read; the message names the file."""


# --------------------------------------------------------------------------------------------
# The run folder's lock


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run folder's lock (``RunDir.lock``, created with the folder if need be) while
    the block runs; refuse at once, naming the holder's pid, if another process holds it.

    The lock is an ``flock``: the OS drops it when its holder exits, even on a kill, so a stale
    lock file never blocks. The file stays; its pid is cleared on release."""
    path = RunDir(run_dir).lock
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise CheckpointError(f"{run_dir}: in use by process {holder} (a train or extract "
                                  f"writing it); wait for it to end, or stop it") from None
        f.truncate(0)
        f.write(f"{os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            f.truncate(0)


# --------------------------------------------------------------------------------------------
# Atomic files


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, with the mode any new
    file gets (the umask's). An OSError names ``path`` and leaves no temporary file behind."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise OSError(err.errno, err.strerror, str(path)) from err


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def save_tensors(tensors: dict[str, Tensor], path: Path) -> None:
    """A safetensors file written atomically, readable as any other file of the run (the
    library's own writer makes it 0600)."""
    atomic_write_bytes(path, save({k: v.contiguous() for k, v in tensors.items()}))


def json_safe(value: Any) -> Any:
    """nan and inf as null, tuples as lists, numpy scalars as numbers: strict JSON."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, data: Any, indent: int | None = None) -> None:
    """Strict JSON (nan as null), atomically; unindented by default (indenting makes json use
    its slow Python encoder)."""
    atomic_write_text(path, json.dumps(json_safe(data), indent=indent))


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one line of strict JSON (nan and inf as null) and flush it to disk; an OSError
    (a full disk) names ``path``."""
    line = json.dumps(json_safe(record), allow_nan=False) + "\n"
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(path)) from err


def truncate_jsonl(path: Path, last_step: int) -> None:
    """Keep only the records with ``step <= last_step`` (what a resumed run will not redo).

    A torn last line (a kill during an append: no newline, not JSON) is dropped; any other
    unreadable line raises :class:`CheckpointError` naming the file and line."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
    kept = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            step = json.loads(line)["step"]
        except (json.JSONDecodeError, KeyError, TypeError):
            if number == len(lines) and not line.endswith("\n"):
                continue  # torn by a kill during its append; the resumed run rewrites it
            raise CheckpointError(f"{path}: line {number} is not a JSON record with a step; "
                                  f"repair or delete that line, then resume again") from None
        if step <= last_step:
            kept.append(line)
    atomic_write_text(path, "".join(kept))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# Writing


def compact(tensors: dict[str, Tensor], masks: dict[str, Tensor]) -> dict[str, Tensor]:
    """Store every tensor that has a mask as its surviving indices and values."""
    out: dict[str, Tensor] = {}
    for name, tensor in tensors.items():
        tensor = tensor.detach().contiguous()
        if name in masks:
            flat = masks[name].flatten().nonzero().squeeze(1)
            out[f"{name}.indices"] = flat.to(torch.int32)
            out[f"{name}.values"] = tensor.flatten()[flat]
        else:
            out[name] = tensor
    return out


def expand(stored: dict[str, Tensor], shapes: dict[str, list[int]]) -> dict[str, Tensor]:
    """Inverse of :func:`compact`: dense tensors of the given shapes."""
    out: dict[str, Tensor] = {}
    for name, shape in shapes.items():
        if name in stored:
            out[name] = stored[name]
            continue
        values = stored[f"{name}.values"]
        dense = torch.zeros(int(torch.tensor(shape).prod()), dtype=values.dtype)
        dense[stored[f"{name}.indices"].long()] = values
        out[name] = dense.view(shape)
    return out


def save_checkpoint(
    run_dir: Path,
    step: int,
    weights: dict[str, Tensor],
    masks: dict[str, Tensor],
    state: dict[str, Tensor] | None,
    meta: dict[str, Any],
) -> Path:
    """Write a complete checkpoint for ``step`` and return its folder.

    ``state`` (optimizer and sparsifier tensors) is kept only in the :data:`RESUMABLE` newest
    checkpoints; older ones lose theirs once this one is in place."""
    weights = {k: v.detach().cpu() for k, v in weights.items()}  # a GPU run saves CPU tensors
    masks = {k: v.cpu() for k, v in masks.items()}
    run = RunDir(run_dir)
    run.checkpoints.mkdir(parents=True, exist_ok=True)
    final, partial = run.checkpoint(step), run.partial_checkpoint(step)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    save_tensors(compact(weights, masks), partial / MODEL_FILE)
    if state is not None:
        save_tensors({k: v.detach().cpu() for k, v in state.items()}, partial / STATE_FILE)
    files = {
        p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(partial.iterdir())
    }
    full_meta = {
        "format": FORMAT,
        "version": VERSION,
        **meta,
        "step": step,
        "shapes": {name: list(t.shape) for name, t in weights.items()},
        "sparse": sorted(masks),
        "files": files,
    }
    atomic_write_text(partial / META_FILE, json.dumps(full_meta, indent=1))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)
    if state is not None:
        for older in list_checkpoints(run_dir)[:-RESUMABLE]:
            (older / STATE_FILE).unlink(missing_ok=True)
    return final


# --------------------------------------------------------------------------------------------
# Reading


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first (partial saves are ignored)."""
    run = RunDir(run_dir)
    return [run.checkpoint(step) for step in run.checkpoint_steps()]


def read_meta(ckpt: Path) -> dict[str, Any]:
    """``meta.json`` of a checkpoint, after checking that every file it lists is intact."""
    ckpt = Path(ckpt)
    meta_path = ckpt / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{meta_path}: missing; {ckpt} is no checkpoint") from None
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{meta_path}: not valid JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path}: not a sparsecircuits checkpoint")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{meta_path}: format version {meta.get('version')}, "
                              f"this sparsecircuits reads version {VERSION}")
    for name, expected in meta["files"].items():
        path = ckpt / name
        if name == STATE_FILE and not path.exists():
            continue  # a newer checkpoint took over the resume state
        if not path.exists():
            raise CheckpointError(f"{path}: missing from checkpoint")
        size = path.stat().st_size
        if size != expected["bytes"]:
            raise CheckpointError(
                f"{path}: truncated or altered ({size} bytes, expected {expected['bytes']})")
        if _sha256(path) != expected["sha256"]:
            raise CheckpointError(f"{path}: contents do not match the checksum in meta.json")
    return meta


def load_tensors(path: Path) -> dict[str, Tensor]:
    """The tensors of a safetensors file; a file that cannot be read is a CheckpointError."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err}); restore it "
                              f"or delete it") from None


def load_weights(ckpt: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Dense weights and meta of a checkpoint."""
    meta = read_meta(ckpt)
    return expand(load_tensors(Path(ckpt) / MODEL_FILE), meta["shapes"]), meta


def load_state(ckpt: Path) -> dict[str, Tensor]:
    """The resume state (optimizer and masks) of a checkpoint; only the newest have one."""
    path = Path(ckpt) / STATE_FILE
    if not path.exists():
        raise CheckpointError(f"{path}: missing; only the {RESUMABLE} newest checkpoints can be "
                              f"resumed from")
    return load_tensors(path)


def has_state(ckpt: Path) -> bool:
    """Whether a checkpoint kept its resume state (only the :data:`RESUMABLE` newest do)."""
    return (Path(ckpt) / STATE_FILE).exists()


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def flatten_optimizer(
    optimizer: torch.optim.Optimizer, named: dict[str, Tensor]
) -> dict[str, Tensor]:
    """The optimizer's per-parameter state as ``optimizer/<param name>/<key>`` tensors."""
    return {
        f"optimizer/{name}/{key}": value
        for name, param in named.items()
        for key, value in optimizer.state.get(param, {}).items()
    }


def restore_optimizer(
    optimizer: torch.optim.Optimizer, named: dict[str, Tensor], state: dict[str, Tensor]
) -> None:
    """Inverse of :func:`flatten_optimizer`."""
    for key, value in state.items():
        if key.startswith("optimizer/"):
            name, field = key[len("optimizer/"):].rsplit("/", 1)
            param = named[name]
            optimizer.state[param][field] = value.to(param.device if value.dim() else "cpu",
                                                     copy=True)


def read_saved_config(run_dir: Path) -> dict[str, Any]:
    """The plain dict a run saved in its ``config.json``; a missing or damaged file is a
    :class:`CheckpointError` naming it."""
    path = RunDir(run_dir).config
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing; is {run_dir} a run folder?") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err}); restore it") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a run config (a {type(data).__name__}); restore it")
    return data


def read_run_config(run_dir: Path) -> Config:
    """The resolved config a run saved in its ``config.json``."""
    try:
        return config_from_dict(read_saved_config(run_dir))
    except ConfigError as err:
        raise CheckpointError(f"{RunDir(run_dir).config}: {err}; restore it") from None


def load_model(ckpt_dir: str | Path) -> tuple[SparseGPT, dict[str, Any]]:
    """The model saved in a checkpoint folder (in eval mode) and its meta; given a run folder,
    its newest checkpoint's.

    The architecture comes from the run's config, two folders up."""
    ckpt_dir = Path(ckpt_dir)
    if RunDir(ckpt_dir).config.exists():
        newest = latest_checkpoint(ckpt_dir)
        if newest is None:
            raise CheckpointError(f"{RunDir(ckpt_dir).checkpoints}: no checkpoint in this run")
        ckpt_dir = newest
    elif not (ckpt_dir / META_FILE).exists():
        raise CheckpointError(f"{ckpt_dir}: neither a run folder (no config.json) nor a "
                              f"checkpoint (no {META_FILE})")
    config = read_run_config(ckpt_dir.parent.parent)
    weights, meta = load_weights(ckpt_dir)
    model = SparseGPT(config.model)
    model.load_state_dict(weights)
    model.eval()
    return model, meta
