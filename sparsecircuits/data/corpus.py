"""The text corpus: the Python standard library of the running interpreter, one document per file.

Every machine has it without a download. Test folders and `site-packages` are left out, and so
are files that are not UTF-8. Files are sorted by relative path and every `holdout_every`-th one
is held out, so the split is the same wherever the same standard library is installed; the
corpus `fingerprint` tells two standard libraries apart.

Near-duplicates. The standard library holds families of files generated from one template (the
charmap codecs `encodings/cp*.py`, the CJK codecs, lib2to3's fixers) and copies (lib2to3's
`tokenize.py`). Two such documents in one cycle fake anticipatory recovery: training one lowers
the other's loss. `pick_documents` never picks two documents whose estimated Jaccard index of
character 8-gram sets ("shingles") reaches `NEAR_DUPLICATE`. The estimate is a bottom-k MinHash:
each shingle packs exactly into 56 bits (ids are below 128), a splitmix64 mix hashes it, and a
document keeps its 256 smallest distinct hashes; the Jaccard estimate is the fraction of the
union's 256 smallest hashes found in both sketches (standard error <= 0.031). A sketch costs one
pass over the document (the whole 12 M-character corpus in about 2 s on one core; only the
documents a pick considers are sketched) and a comparison a few microseconds.
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


# --------------------------------------------------------------------------------------------
# Near-duplicates

SHINGLE = 8
"""Characters per shingle: long enough that two files share a shingle mostly by sharing text,
not by sharing Python's keywords and indentation."""

SKETCH_SIZE = 256
"""Hashes kept per document (bottom-k MinHash): an estimate of a Jaccard index J has a standard
error of about sqrt(J (1 - J) / 256), at most 0.031."""

NEAR_DUPLICATE = 0.2
"""Estimated shingle Jaccard at or above which two documents are near-duplicates.

Measured on CPython 3.11's standard library (734 files, ``benchmarks/corpus_duplicates.py``):
two files drawn at random share 0.008 (median) and 0.031 (90th percentile); the pairs at 0.2
or above that we read are copies or generated siblings (the charmap and CJK codecs make nearly
all of the 1,668 pairs at 0.5 or above; ``lib2to3/pgen2/tokenize.py`` and ``tokenize.py`` at
0.39; ``encodings/oem.py`` and ``encodings/gbk.py``, whose ``getregentry`` block is a third of
each, at 0.27; lib2to3's fixers).
Between 0.1 and 0.2 sit small files that share a licence header and an import block."""


def _shingle_hashes(tokens: np.ndarray) -> np.ndarray:
    """The distinct hashed ``SHINGLE``-grams of a token array, sorted (uint64).

    Ids are below 128, so a shingle packs exactly into 56 bits; the splitmix64 finaliser then
    spreads the packed values uniformly, so the smallest hashes are a uniform sample."""
    if len(tokens) < SHINGLE:
        return np.zeros(0, dtype=np.uint64)
    grams = np.lib.stride_tricks.sliding_window_view(tokens.astype(np.uint64), SHINGLE)
    x = (grams << (np.arange(SHINGLE, dtype=np.uint64) * np.uint64(7))).sum(axis=1,
                                                                            dtype=np.uint64)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return np.unique(x)


@functools.lru_cache(maxsize=4096)
def document_sketch(doc: Document) -> np.ndarray:
    """The ``SKETCH_SIZE`` smallest shingle hashes of ``doc``, sorted (fewer for short
    documents). Cached per document object."""
    sketch = _shingle_hashes(doc.tokens)[:SKETCH_SIZE]
    sketch.flags.writeable = False
    return sketch


def shingle_jaccard(a: Document, b: Document) -> float:
    """Bottom-k estimate of the Jaccard index of the two documents' ``SHINGLE``-gram sets.

    Among the ``SKETCH_SIZE`` smallest hashes of the union (which the two sketches determine),
    the fraction present in both documents. 0 when either has no shingle."""
    sa, sb = document_sketch(a), document_sketch(b)
    if not len(sa) or not len(sb):
        return 0.0
    union = np.union1d(sa, sb)[:SKETCH_SIZE]
    both = np.intersect1d(sa, sb, assume_unique=True)
    return float(np.count_nonzero(both <= union[-1])) / len(union)


def near_duplicate_pairs(docs: list[Document], threshold: float = 0.0
                         ) -> list[tuple[float, str, str]]:
    """Every pair of ``docs`` whose :func:`shingle_jaccard` is at least ``threshold`` (and
    above 0), as ``(jaccard, name, name)``, most similar first.

    Pairs whose sketches share fewer than ``threshold * SKETCH_SIZE / 2`` hashes are skipped
    without the full estimate (their estimate is almost surely below ``threshold``)."""
    sets = [frozenset(document_sketch(doc).tolist()) for doc in docs]
    floor = max(1, int(threshold * SKETCH_SIZE / 2))
    pairs = []
    for i in range(len(docs)):
        for j in range(i + 1, len(docs)):
            if len(sets[i] & sets[j]) >= floor:
                jaccard = shingle_jaccard(docs[i], docs[j])
                if jaccard >= threshold and jaccard > 0:
                    pairs.append((jaccard, docs[i].name, docs[j].name))
    return sorted(pairs, key=lambda p: (-p[0], p[1], p[2]))


def pick_documents(corpus: Corpus, count: int, min_tokens: int, seed: int,
                   threshold: float = NEAR_DUPLICATE) -> list[Document]:
    """`count` distinct train documents of at least `min_tokens` tokens, chosen by `seed`, no
    two of them near-duplicates (:func:`shingle_jaccard` at or above `threshold`).

    Position `i` in the list is the document a schedule calls `doc:i`. The seeded sample is
    the one earlier versions drew; a document in it that near-duplicates one before it is
    replaced by the next candidate of a seeded shuffle of the rest, so a sample without
    near-duplicates is unchanged. Raises ValueError when too few documents are long enough or
    when the distinct ones run out.
    """
    eligible = [doc for doc in corpus.train if len(doc) >= min_tokens]
    if len(eligible) < count:
        raise ValueError(
            f"asked for {count} documents of at least {min_tokens} tokens; "
            f"the corpus has {len(eligible)}"
        )
    rng = random.Random(seed)
    sample = rng.sample(eligible, count)
    chosen = set(map(id, sample))
    rest = [doc for doc in eligible if id(doc) not in chosen]
    candidates = sample + rng.sample(rest, len(rest))
    picked: list[Document] = []
    for doc in candidates:
        if len(picked) == count:
            return picked
        if all(shingle_jaccard(doc, other) < threshold for other in picked):
            picked.append(doc)
    if len(picked) == count:
        return picked
    raise ValueError(
        f"asked for {count} documents of at least {min_tokens} tokens that are not "
        f"near-duplicates (shingle Jaccard < {threshold}); a greedy pass found {len(picked)}"
    )
