"""The training loop: a weight-sparse GPT trained under a cyclic schedule, into a run folder.

Every step trains the source the schedule names (``data.source_rows`` rows of a task or a
document) plus ``data.lm_rows`` windows of corpus text, then applies AdamW and the top-k
projection. At every block boundary every task and source is evaluated on its fixed set
(``evals.jsonl``, the loss matrix) and a checkpoint is saved. Each step's batch is a pure
function of ``(run.seed, step)``, so a run resumed from its newest checkpoint writes exactly the
metrics of a run that never stopped.

It writes the run folder's config, ``metrics.jsonl`` (loss, learning rate, density and churn
every ``run.log_every`` steps), ``evals.jsonl`` and checkpoints, at the paths
:class:`~sparsecircuits.rundir.RunDir` gives.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from sparsecircuits import checkpoint as ckpt
from sparsecircuits.config import Config, ConfigError
from sparsecircuits.data.corpus import (
    Corpus,
    document_windows,
    lm_windows,
    load_corpus,
    pick_documents,
)
from sparsecircuits.data.tasks import (
    MAX_PROMPT_CHARS,
    TASKS,
    contrast_accuracy,
    contrast_loss,
    eval_set,
    train_batch,
)
from sparsecircuits.data.tokenizer import TOKENIZER
from sparsecircuits.distributed import ALONE, Ranks, process_group
from sparsecircuits.kernels.triton_support import interpreting, triton_available
from sparsecircuits.model import SparseGPT
from sparsecircuits.progress import progress_bar
from sparsecircuits.rundir import RunDir
from sparsecircuits.schedules import MIXED, Schedule, Slot, build_schedule
from sparsecircuits.sparsity import Churn, Sparsifier, learning_rate, normalize_grad_rms

DOC_PREFIX = "doc:"
Saved = tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Any]]
"""A checkpoint read for resuming: weights, optimizer and sparsifier state, meta."""


# --------------------------------------------------------------------------------------------
# Sources: what a schedule can name


@dataclass
class Sources:
    """The tasks and documents a run trains and evaluates, and the corpus behind them."""

    corpus: Corpus
    tasks: list[str]
    documents: dict[str, Tensor]
    """Fixed windows ``[n, ctx+1]`` per document source."""
    heldout: Tensor
    """Fixed held-out corpus windows ``[n, ctx+1]`` for the language-modelling evaluation."""


def check_sources(config: Config) -> None:
    """Raise :class:`ConfigError` if the schedule names a task or document that does not exist."""
    for i, name in enumerate(config.schedule.sources):
        field = f"schedule.sources[{i}]"
        if name.startswith(DOC_PREFIX):
            index = name[len(DOC_PREFIX):]
            if not index.isdigit() or int(index) >= config.data.documents:
                raise ConfigError(f"{field}: {name!r} needs data.documents > {index} "
                                  f"(documents are doc:0 .. doc:{config.data.documents - 1})")
        elif name not in TASKS:
            raise ConfigError(f"{field}: unknown task {name!r} (tasks: {', '.join(TASKS)}; "
                              f"documents: doc:N)")
    if config.model.vocab_size < TOKENIZER.vocab_size:
        raise ConfigError(f"model.vocab_size: {config.model.vocab_size} is smaller than the "
                          f"tokenizer's {TOKENIZER.vocab_size} symbols")


BYTES_PER_PARAMETER = 48
"""Training memory per parameter: weights, gradients, two AdamW moments, masks and the top-k
projection's scratch (measured on the CPU: a 50.6M-parameter model grew the peak RSS by 2.3 GiB,
45 bytes per parameter)."""
BASE_BYTES = 2**29
"""torch, the corpus and the evaluation sets (measured: 0.45 GiB RSS once a tiny run is set up)."""


def check_run(config: Config, world: int = 1) -> Schedule:
    """Check what a run needs beyond its config's own fields, before anything is written: the
    sources, the schedule, the tasks' prompts against ``model.n_ctx``, a row of every batch for
    each of ``world`` ranks, the kernels, the device and the memory. Raises
    :class:`ConfigError` naming the field; returns the schedule."""
    check_sources(config)
    _check_split(config, world)
    try:
        schedule = build_schedule(config.schedule)
    except ValueError as err:  # the schedule's errors name their field
        raise ConfigError(str(err)) from None
    if config.model.n_ctx < MAX_PROMPT_CHARS:
        raise ConfigError(f"model.n_ctx: {config.model.n_ctx} is shorter than the tasks' "
                          f"prompts (up to {MAX_PROMPT_CHARS} tokens; every task is evaluated); "
                          f"set it to at least {MAX_PROMPT_CHARS}")
    device = run_device(config)
    if config.model.kernel_backend == "triton":
        if not triton_available():
            raise ConfigError("model.kernel_backend: 'triton' needs the triton package (pip "
                              "install 'sparsecircuits[kernels]'); use 'auto' or 'torch'")
        if device.type != "cuda" and not interpreting():
            raise ConfigError("model.kernel_backend: 'triton' runs on a CUDA GPU; set "
                              "run.device=\"cuda\" on a machine with one, or use 'auto' or 'torch'")
    _check_memory(config, device)
    return schedule


def _check_split(config: Config, world: int) -> None:
    """Refuse a batch too small to give every rank a row: its smallest step has
    ``data.source_rows`` (or a scheduled document's ``data.document_windows``) plus
    ``data.lm_rows`` rows."""
    d = config.data
    fewest = {"data.source_rows": d.source_rows + d.lm_rows}
    if any(name.startswith(DOC_PREFIX) for name in config.schedule.sources):
        fewest["data.document_windows"] = d.document_windows + d.lm_rows
    field, rows = min(fewest.items(), key=lambda item: item[1])
    if rows < world:
        raise ConfigError(f"{field}: {field} + data.lm_rows is {rows}, fewer rows a step than "
                          f"the {world} ranks (each needs one); make it at least {world} or "
                          f"train on fewer ranks")


def _check_memory(config: Config, device: torch.device) -> None:
    """Refuse a model whose training would not fit in the device's memory (a rough estimate:
    :data:`BASE_BYTES`, :data:`BYTES_PER_PARAMETER` per parameter, 4 bytes per activation of
    one batch; 0.9-1.1x the peak RSS measured on four CPU runs of 0.4M to 51M parameters)."""
    m = config.model
    with torch.device("meta"):  # counts the parameters without allocating them
        parameters = sum(p.numel() for p in SparseGPT(m).parameters())
    rows = config.data.source_rows + config.data.lm_rows
    per_token = m.n_layers * (12 * m.d_model + 3 * m.d_mlp + m.n_heads * m.n_ctx) + 2 * m.vocab_size
    need = BASE_BYTES + BYTES_PER_PARAMETER * parameters + 4 * rows * m.n_ctx * per_token
    if device.type == "cuda":
        have, where = torch.cuda.get_device_properties(device).total_memory, "GPU"
    else:
        have, where = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "machine"
    if need > have:
        raise ConfigError(f"model: {parameters:,} parameters need about "
                          f"{need / 2**30:,.1f} GiB to train, more than this {where}'s "
                          f"{have / 2**30:,.1f} GiB; make model.d_model, model.d_mlp, "
                          f"model.n_layers or data.source_rows smaller")


def load_sources(config: Config) -> Sources:
    """Load the corpus and fix every evaluation set."""
    d, ctx = config.data, config.model.n_ctx
    try:
        corpus = load_corpus(d.corpus_root or None, holdout_every=d.holdout_every)
    except ValueError as err:
        raise ConfigError(f"data.corpus_root: {err}; give a folder of .py files, or \"\" for "
                          f"the standard library") from None
    docs = pick_documents(corpus, d.documents, 2 * (ctx + 1), config.run.seed)
    documents = {
        f"{DOC_PREFIX}{i}": document_windows(doc, d.document_windows, ctx)
        for i, doc in enumerate(docs)
    }
    heldout = lm_windows(corpus.heldout, d.eval_windows, ctx, torch.Generator().manual_seed(0))
    return Sources(corpus, list(TASKS), documents, heldout)


# --------------------------------------------------------------------------------------------
# One step


def step_generator(seed: int, step: int) -> torch.Generator:
    """The random stream of one step: a pure function of the run seed and the step."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def _row_counts(config: Config, slot: Slot, generator: torch.Generator) -> dict[str, int]:
    """How many source rows each source gets this step: all of them for the scheduled source,
    or a uniform random split among every source in a mixed (warm-up) step."""
    rows = config.data.source_rows
    if slot.source != MIXED:
        return {slot.source: rows}
    names = config.schedule.sources
    picks = torch.randint(len(names), (rows,), generator=generator)
    return {name: int((picks == i).sum()) for i, name in enumerate(names)}


def batch_loss(model: SparseGPT, config: Config, sources: Sources, slot: Slot,
               ranks: Ranks = ALONE) -> dict[str, Tensor]:
    """Loss on the source rows and on the corpus rows of ``slot.step``'s batch, or on this
    rank's share of them.

    A task row is trained on its answer (cross-entropy at the last position); a document window
    and a corpus window on every next token. A document named by the schedule is trained on all
    its fixed windows, every step (Yang et al.); in a mixed step it gets a random few of them.
    ``source_loss`` averages over source rows, ``lm_loss`` over corpus rows. Every rank draws
    the whole batch (the same for any number of ranks) and runs its rows (:meth:`Ranks.rows`),
    dividing their summed losses by the whole batch's row counts: summed over the ranks, the
    losses and their gradients are the one-rank run's."""
    d, ctx = config.data, config.model.n_ctx
    generator = step_generator(config.run.seed, slot.step)
    counts = _row_counts(config, slot, generator)
    tasks = [train_batch(TASKS[name], n, ctx, generator)
             for name, n in counts.items() if n and name in TASKS]
    windows = []
    for name, n in counts.items():
        if n and name in sources.documents:
            fixed = sources.documents[name]
            pick = torch.randint(len(fixed), (n,), generator=generator)
            windows.append(fixed if slot.source == name else fixed[pick])
    n_docs = sum(len(w) for w in windows)
    if d.lm_rows:
        windows.append(lm_windows(sources.corpus.train, d.lm_rows, ctx, generator))
    device = model.W_E.device  # batches are drawn on the CPU (same rows on every device)
    task_tokens = torch.cat([t.tokens for t in tasks]) if tasks else torch.zeros(0, ctx).long()
    correct = torch.cat([t.correct for t in tasks]) if tasks else torch.zeros(0).long()
    window_tokens = torch.cat(windows) if windows else torch.zeros(0, ctx + 1).long()
    n_tasks = len(task_tokens)
    mine = ranks.rows(n_tasks + len(window_tokens))  # rows: the tasks', then the windows'
    t = slice(min(mine.start, n_tasks), min(mine.stop, n_tasks))
    w = slice(max(mine.start, n_tasks) - n_tasks, max(mine.stop, n_tasks) - n_tasks)
    window_tokens = window_tokens[w].to(device)
    logits = model(torch.cat([task_tokens[t].to(device), window_tokens[:, :-1]]))
    n_mine = t.stop - t.start
    task_loss = F.cross_entropy(logits[:n_mine, -1], correct[t].to(device), reduction="none")
    window_loss = F.cross_entropy(logits[n_mine:].transpose(1, 2), window_tokens[:, 1:],
                                  reduction="none").mean(dim=1)
    my_docs = max(n_docs - w.start, 0)  # document windows come before corpus windows
    source_loss = torch.cat([task_loss, window_loss[:my_docs]]).sum() / (n_tasks + n_docs)
    lm_loss = (window_loss[my_docs:].sum() / d.lm_rows if d.lm_rows
               else torch.zeros((), device=device))
    return {"loss": source_loss + lm_loss, "source_loss": source_loss, "lm_loss": lm_loss}


@torch.no_grad()
def evaluate_all(model: SparseGPT, config: Config, sources: Sources) -> dict[str, dict[str, float]]:
    """Every task's contrast loss and accuracy, every document's and the held-out corpus's
    language-modelling loss, on their fixed sets."""
    was_training = model.training
    model.eval()
    ctx, device = config.model.n_ctx, model.W_E.device
    results: dict[str, dict[str, float]] = {}
    for name in sources.tasks:
        fixed = eval_set(TASKS[name], ctx, config.data.eval_examples)
        last = model(fixed.tokens.to(device), last_only=True)[:, -1].cpu()
        results[name] = {
            "loss": float(contrast_loss(last, fixed.correct, fixed.wrong).mean()),
            "accuracy": float(contrast_accuracy(last, fixed.correct, fixed.wrong)),
        }
    for name, windows in {**sources.documents, "corpus": sources.heldout}.items():
        windows = windows.to(device)
        logits = model(windows[:, :-1])
        results[name] = {"loss": float(F.cross_entropy(logits.transpose(1, 2), windows[:, 1:]))}
    model.train(was_training)
    return results


# --------------------------------------------------------------------------------------------
# The run


class TrainingError(RuntimeError):
    """A run that cannot go on (a non-finite loss); the message names the run folder."""


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Within: ``threads`` torch threads (``run.threads``; 0 keeps torch's count), restored
    after. A run is bitwise reproducible at one thread count."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_device(config: Config) -> torch.device:
    """The device ``run.device`` names, or a ConfigError if this machine lacks it."""
    device = torch.device(config.run.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"run.device: {config.run.device!r} asked for, but torch sees no GPU")
    return device


class Trainer:
    """Owns the model, optimizer, sparsifier and schedule of one run folder.

    In a process group (:func:`~sparsecircuits.distributed.process_group`) every rank holds the
    whole model and trains its share of each step's rows; the gradients are summed over the
    ranks, so every rank takes the same step. Rank 0 alone touches the run folder: lock, config,
    logs, evaluations and checkpoints."""

    def __init__(self, config: Config, run_dir: Path) -> None:
        self.ranks = Ranks.current()
        self.schedule: Schedule = check_run(config, self.ranks.world)
        self._blocks = self.schedule.blocks()
        self.config = config
        self.run_dir = Path(run_dir)
        self.files = RunDir(run_dir)
        self.sources = load_sources(config)
        self.model = SparseGPT(config.model, seed=config.run.seed).to(run_device(config))
        self.named = dict(self.model.named_parameters())
        o = config.optimizer
        decay = [p for n, p in self.named.items() if p.dim() == 2 and n != "bigram"]
        no_decay = [p for n, p in self.named.items() if p.dim() != 2 or n == "bigram"]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": o.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps,
        )
        self.sparsifier = Sparsifier(self.model, config.sparsity, self.schedule.total_steps)
        self.step = 0
        self._churn = Counter[str]()
        self._block_churn: dict[str, Counter[str]] = {}
        self._alive: dict[str, int] = {}
        """Surviving entries of every sparse tensor after the latest projection."""

    # -- files --------------------------------------------------------------------------

    def _files_ready(self, resume: bool) -> None:
        """Write config.json for a new run, or check that the run being resumed has this config
        (``resume`` on a folder without a config.json starts a new run)."""
        config_path = self.files.config
        saved = json.loads(json.dumps(self.config.to_dict()))  # as config.json holds it
        if resume and config_path.exists():
            previous = ckpt.read_saved_config(self.run_dir)
            if previous != saved:
                changed = [
                    f"{section}.{key}"
                    for section, values in saved.items()
                    for key, value in values.items()
                    if value != previous.get(section, {}).get(key)
                ]
                raise ConfigError(f"{config_path}: --resume needs the same config; differs in "
                                  f"{', '.join(changed) or 'structure'}")
            return
        if self.files.checkpoints.exists() or config_path.exists():
            raise ConfigError(f"{self.run_dir}: already holds a run; pass --resume to continue "
                              f"it or choose another --out")
        ckpt.atomic_write_text(config_path, json.dumps(saved, indent=1))

    def _open(self, stack: ExitStack, resume: bool) -> Saved | None:
        """Rank 0's part of the start: take the run folder's lock (held until ``stack``
        closes), write or check the config, and read the checkpoint to resume from, if any."""
        stack.enter_context(ckpt.run_lock(self.run_dir))
        self._files_ready(resume)
        return self._resume() if resume else None

    def _resume(self) -> Saved | None:
        """Read the newest checkpoint (the one before it if the newest is damaged), or None if
        there is none yet; either way the logs keep exactly the records the resumed run will not
        write again."""
        saved = None
        newest = ckpt.list_checkpoints(self.run_dir)[::-1][:ckpt.RESUMABLE]
        errors: list[ckpt.CheckpointError] = []
        for checkpoint in newest:
            try:
                weights, meta = ckpt.load_weights(checkpoint)
                saved = weights, ckpt.load_state(checkpoint), meta
                break
            except ckpt.CheckpointError as err:
                errors.append(err)
        else:
            if errors:
                raise errors[0]
        if errors:
            print(f"sparsecircuits: note: {errors[0]}; resuming from {checkpoint.name}, the "
                  f"checkpoint before it", file=sys.stderr)
        for path in (self.files.metrics, self.files.evals):
            ckpt.truncate_jsonl(path, saved[2]["step"] if saved else -1)
        return saved

    def _restore(self, weights: dict[str, Tensor], state: dict[str, Tensor],
                 meta: dict[str, Any]) -> None:
        """Take a checkpoint's weights, optimizer, masks and churn, and continue after its step."""
        self.model.load_state_dict(weights)
        ckpt.restore_optimizer(self.optimizer, self.named, state)
        self.sparsifier.load_state_dict(
            {k: v for k, v in state.items() if not k.startswith("optimizer/")}
        )
        self._churn = Counter(meta["churn_total"])
        if meta["step"] not in self.schedule.boundaries():
            self._block_churn = {name: Counter(c) for name, c in meta["churn"].items()}
        self.step = meta["step"] + 1

    # -- the loop -----------------------------------------------------------------------

    def train(self, resume: bool = False, progress: bool | None = None) -> Path:
        """Train to the end of the schedule; return the run folder. Runs at ``run.threads``
        torch threads (when set) and restores torch's thread count after."""
        with torch_threads(self.config.run.threads), ExitStack() as stack:
            saved = self.ranks.from_writer(lambda: self._open(stack, resume))
            if saved is not None:  # every rank continues from rank 0's reading of it
                self._restore(*saved)
            self._loop(progress)
        return self.run_dir

    def _loop(self, progress: bool | None) -> None:
        boundaries = set(self.schedule.boundaries())
        total = self.schedule.total_steps
        bar = progress_bar(total=total, initial=self.step, unit="step", desc=self.run_dir.name,
                           show=progress if self.ranks.writer else False)
        self.model.train()
        while self.step < total:
            slot = self.schedule(self.step)
            record = self._train_step(slot)
            logged = self.step % self.config.run.log_every == 0 or self.step == total - 1
            if logged and self.ranks.writer:
                record.update(density=self._densities(), churn=dict(self._churn))
                ckpt.append_jsonl(self.files.metrics, record)
                bar.set_postfix(loss=f"{record['loss']:.3f}", src=slot.source[:12],
                                density=f"{record['density']['matrix']:.3f}")
            save_every = self.config.run.save_every
            if self.step in boundaries:
                self._end_block(slot)
            elif save_every and (self.step + 1) % save_every == 0:
                self._save(slot)
            self.step += 1
            bar.update(1)
        bar.close()

    def _train_step(self, slot: Slot) -> dict[str, Any]:
        """One optimizer step and projection; returns what metrics.jsonl logs of it."""
        o, s = self.config.optimizer, self.config.sparsity
        losses = batch_loss(self.model, self.config, self.sources, slot, self.ranks)
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        params = list(self.named.values())
        values = torch.stack([loss.detach() for loss in losses.values()])
        self.ranks.sum_([values, *(p.grad for p in params if p.grad is not None)])
        logged = dict(zip(losses, values.tolist(), strict=True))  # the whole batch's losses
        if not math.isfinite(logged["loss"]):
            self._stop(f"training loss is {logged['loss']} at step {self.step}")
        grad_rms = normalize_grad_rms(params) if o.normalize_grad else float("nan")
        lr = learning_rate(self.step, self.schedule.total_steps, o, s)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self._count(self.sparsifier.project(self.step))
        return {
            "step": self.step,
            "source": slot.source,
            **logged,
            "lr": lr,
            "grad_rms": grad_rms,
        }

    # -- branches off the run (sparsecircuits.transfer) -------------------------------------

    def branch(self, checkpoint: Path) -> bool:
        """Stand at ``checkpoint`` to train a branch off the run, which writes nothing: its
        weights, and its optimizer moments and masks where it kept them (the
        ``checkpoint.RESUMABLE`` newest checkpoints); without them the optimizer starts fresh.
        The next step is the one after the checkpoint's. Returns whether it had them."""
        self.optimizer.state.clear()
        weights, meta = ckpt.load_weights(checkpoint)
        if ckpt.has_state(checkpoint):
            self._restore(weights, ckpt.load_state(checkpoint), meta)
            return True
        self.model.load_state_dict(weights)
        self.step = meta["step"] + 1
        return False

    def step_on(self, source: str) -> dict[str, Any]:
        """One step on ``source`` alone, off the schedule: the batch, learning rate and
        projection of the trainer's step, as the run would draw them; writes nothing. Returns
        the step's record (loss, learning rate)."""
        record = self._train_step(Slot(self.step, source, cycle=-1, block=-1, position=-1,
                                       offset=0))
        self.step += 1
        return record

    def _count(self, churn: dict[str, Churn]) -> None:
        for name, c in churn.items():
            self._alive[name] = c.alive
            counter = self._block_churn.setdefault(name, Counter())
            for key in ("births", "deaths", "revivals"):
                value = getattr(c, key)
                counter[key] += value
                self._churn[key] += value

    def _densities(self) -> dict[str, float]:
        """Density of all matrices together and of all embeddings and biases together."""
        kinds = self.model.sparse_parameters()
        out: dict[str, float] = {}
        for kind in ("matrix", "embed"):
            names = [n for n, k in kinds.items() if k == kind and n in self._alive]
            numel = sum(self.named[n].numel() for n in names)
            out[kind] = sum(self._alive[n] for n in names) / numel if numel else 1.0
        return out

    def _end_block(self, slot: Slot) -> None:
        if self.ranks.writer:
            evals = evaluate_all(self.model, self.config, self.sources)
            ckpt.append_jsonl(self.files.evals, {**self._where(slot), "evals": evals})
        self._save(slot)
        self._block_churn = {}
        if self.config.optimizer.reset_at_block:
            self.optimizer.state.clear()

    def _where(self, slot: Slot) -> dict[str, Any]:
        """Where ``slot`` falls in the schedule; ``source`` is its block's source ("mixed" for
        warm-up, iid and interleaved blocks)."""
        block = self._blocks[slot.block]
        return {"step": slot.step, "cycle": slot.cycle, "block": slot.block,
                "position": slot.position, "source": block.source}

    def _stop(self, what: str) -> None:
        """Stop the run, naming the step and the last good checkpoint, which stays as it is (every
        rank stops at the same step, with rank 0's reading of the run folder)."""
        latest = self.ranks.from_writer(lambda: ckpt.latest_checkpoint(self.run_dir))
        kept = f"its last good checkpoint is {latest.name}" if latest else "it has no checkpoint"
        raise TrainingError(f"{self.run_dir}: {what}; the run stopped and {kept}; lower "
                            f"optimizer.lr (or change the config) and train a new run")

    def _check_replicas(self, weights: dict[str, Tensor]) -> None:
        """Raise :class:`TrainingError` unless every rank holds the same weights and masks
        (compared by checksum): the same summed gradients make the same step everywhere."""
        if self.ranks.world == 1:
            return
        tensors = {**{f"weights {n}": w for n, w in weights.items()},
                   **{f"mask {n}": m for n, m in self.sparsifier.masks.items()}}
        mine = {name: hashlib.sha256(t.cpu().numpy().tobytes()).hexdigest()
                for name, t in tensors.items()}
        every = self.ranks.gather(mine)
        differ = {name: [rank for rank, theirs in enumerate(every) if theirs[name] != digest]
                  for name, digest in every[0].items()}
        differ = {name: ranks for name, ranks in differ.items() if ranks}
        if differ:
            name, ranks = next(iter(differ.items()))
            raise TrainingError(
                f"{self.run_dir}: after step {self.step} the ranks' copies differ: {name} on "
                f"rank {', '.join(map(str, ranks))} is not rank 0's ({len(differ)} of "
                f"{len(mine)} tensors differ); the run stopped before saving this checkpoint; "
                f"the ranks must stay identical, so please report this as a bug")

    def _save(self, slot: Slot) -> None:
        """Check the ranks agree (every rank), then write the checkpoint (rank 0)."""
        weights = {name: p.detach() for name, p in self.model.named_parameters()}
        self._check_replicas(weights)
        if not all(bool(torch.isfinite(w).all()) for w in weights.values()):
            self._stop(f"weights are not finite after step {self.step}")
        if not self.ranks.writer:
            return
        state = {**ckpt.flatten_optimizer(self.optimizer, self.named),
                 **self.sparsifier.state_dict()}
        meta = {
            **self._where(slot),
            "density": {name: alive / self.named[name].numel()
                        for name, alive in self._alive.items()},
            "churn": {name: dict(c) for name, c in self._block_churn.items()},
            "churn_total": dict(self._churn),
        }
        ckpt.save_checkpoint(self.run_dir, self.step, weights, self.sparsifier.masks, state, meta)


def train(config: Config, run_dir: str | Path, *, resume: bool = False,
          progress: bool | None = None) -> Path:
    """Train ``config`` into ``run_dir`` (``resume`` continues its newest checkpoint). Under
    ``torchrun`` every rank calls this with the same arguments: they join one process group and
    train one run, written by rank 0 (:func:`~sparsecircuits.distributed.process_group`)."""
    with process_group(run_device(config)):
        return Trainer(config, Path(run_dir)).train(resume=resume, progress=progress)
