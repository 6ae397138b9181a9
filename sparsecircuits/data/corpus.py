"""The text corpus: the Python standard library of the running interpreter, one document per file.

Every machine has it without a download. Test folders and `site-packages` are left out, and so
are files that are not UTF-8. Files are sorted by relative path and every `holdout_every`-th one
is held out, so the split is the same wherever the same standard library is installed; the
corpus `fingerprint` tells two standard libraries apart.
"""

import functools
import hashlib
import random
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sparsecircuits.data.tokenizer import TOKENIZER

EXCLUDED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages"})


@dataclass(frozen=True, eq=False)
class Document:
    """One source file: its path relative to the corpus root and its token ids (read-only)."""

    name: str
    tokens: np.ndarray

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass
class Corpus:
    """Train and held-out documents of one corpus root, and a short hash of its file list."""

    root: Path
    train: list[Document]
    heldout: list[Document]
    fingerprint: str


def stdlib_root() -> Path:
    """The standard-library folder of the running interpreter."""
    return Path(sysconfig.get_paths()["stdlib"])


def load_corpus(root: str | Path | None = None, holdout_every: int = 20) -> Corpus:
    """Load the `.py` files under `root` (default: the standard library) as a `Corpus`.

    Every `holdout_every`-th file in path order is held out. The result is cached per process
    and shared between callers: treat it as read-only. Raises ValueError when `root` does not
    exist or holds no usable `.py` file.
    """
    if holdout_every < 2:
        raise ValueError(f"holdout_every must be at least 2, got {holdout_every}")
    return _load_corpus(Path(stdlib_root() if root is None else root).resolve(), holdout_every)


@functools.lru_cache(maxsize=4)
def _load_corpus(root: Path, holdout_every: int) -> Corpus:
    if not root.is_dir():
        raise ValueError(f"corpus root {root} does not exist or is not a folder")
    docs = []
    for path in sorted(root.rglob("*.py"), key=lambda p: p.relative_to(root).as_posix()):
        relative = path.relative_to(root)
        if EXCLUDED_DIRS.intersection(relative.parts[:-1]) or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        tokens = TOKENIZER.encode_array(text)
        tokens.flags.writeable = False
        docs.append(Document(relative.as_posix(), tokens))
    if not docs:
        raise ValueError(f"corpus root {root} holds no UTF-8 .py files outside test folders")
    listing = "".join(f"{doc.name}\t{len(doc)}\n" for doc in docs)
    return Corpus(
        root=root,
        train=[d for i, d in enumerate(docs) if (i + 1) % holdout_every != 0],
        heldout=[d for i, d in enumerate(docs) if (i + 1) % holdout_every == 0],
        fingerprint=hashlib.sha256(listing.encode()).hexdigest()[:12],
    )


def lm_windows(docs: list[Document], n: int, ctx: int, generator: torch.Generator) -> torch.Tensor:
    """`n` random windows of `ctx + 1` tokens, each inside one document, as a LongTensor [n, ctx+1].

    Documents shorter than `ctx + 1` are skipped; the others are chosen with probability
    proportional to their length, and the start is uniform inside the document. Deterministic
    given the generator's state.
    """
    usable = [doc for doc in docs if len(doc) > ctx]
    if not usable:
        raise ValueError(f"no document holds {ctx + 1} tokens")
    lengths = torch.tensor([len(doc) for doc in usable], dtype=torch.float64)
    picks = torch.multinomial(lengths, n, replacement=True, generator=generator)
    offsets = torch.rand(n, generator=generator, dtype=torch.float64)
    starts = (offsets * (lengths[picks] - ctx)).long()  # in [0, len - ctx - 1]
    rows = [
        usable[doc].tokens[start : start + ctx + 1]
        for doc, start in zip(picks.tolist(), starts.tolist(), strict=True)
    ]
    return torch.from_numpy(np.stack(rows)).long()


def document_windows(doc: Document, n: int, ctx: int) -> torch.Tensor:
    """`n` fixed windows of `ctx + 1` tokens of one document, starts evenly spaced from its
    beginning to its end, as a LongTensor [n, ctx+1]. The same rows every call."""
    if len(doc) <= ctx:
        raise ValueError(f"document {doc.name} has {len(doc)} tokens, fewer than {ctx + 1}")
    starts = np.linspace(0, len(doc) - ctx - 1, n).round().astype(np.int64)
    return torch.from_numpy(np.stack([doc.tokens[s : s + ctx + 1] for s in starts])).long()


def pick_documents(corpus: Corpus, count: int, min_tokens: int, seed: int) -> list[Document]:
    """`count` distinct train documents of at least `min_tokens` tokens, chosen by `seed`.

    Position `i` in the list is the document a schedule calls `doc:i`.
    """
    eligible = [doc for doc in corpus.train if len(doc) >= min_tokens]
    if len(eligible) < count:
        raise ValueError(
            f"asked for {count} documents of at least {min_tokens} tokens; "
            f"the corpus has {len(eligible)}"
        )
    return random.Random(seed).sample(eligible, count)
