"""Binary next-token tasks in Python code, in the style of Gao et al. (2025).

Each task writes a short Python prompt whose next character is one of two fixed answers, and
something earlier in the prompt decides which. A task is a pair of answers and a `build`
function that writes a prompt for a given label (0 or 1); `answers[label]` is the correct next
character and the other one the contrast. Builders draw all their random choices before they
look at the label, so one seed with the two labels gives a contrast pair: two prompts that differ
only in the deciding feature (unless one of them is redrawn for being too long).

Evaluation prompts come from a fixed slice of prompt space (the prompts whose stable hash falls
in the first 1/16 of its range); training rows never come from that slice, so no evaluation
prompt is ever trained on, whatever the evaluation set's size.
"""

import functools
import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sparsecircuits.data.tokenizer import TOKENIZER, CharTokenizer

MAX_PROMPT_CHARS = 64
EVAL_HASH_BUCKETS = 16  # 1 bucket of 16 is reserved for evaluation prompts

# Small vocabularies shared by all tasks, so that prompts vary without drifting from real code.
QUOTES = "\"'"
PARAMS = ("a", "b", "c", "x", "y", "n", "s", "t", "k", "v")
FLAGS = ("found", "done", "ok", "seen", "flag", "valid", "dirty", "stop", "empty", "hit")
NAMES = (
    "x", "y", "n", "val", "item", "data", "res", "total", "key", "name", "count", "items",
    "value", "out", "buf", "acc", "tmp", "node", "line", "text", "args", "size", "path", "row",
)
FUNCS = (
    "f", "g", "run", "load", "parse", "check", "build", "update", "handle", "fetch", "apply",
    "read", "scale", "merge", "emit", "clean",
)
WORDS = (
    "hello", "spam", "eggs", "foo", "bar", "id", "name", "path", "ok", "error", "value",
    "utf-8", "data", "key", "main", "test", "a b", "x y", "%s", "done", "no file",
)


@dataclass(frozen=True)
class Example:
    """A prompt and its two candidate next characters."""

    prompt: str
    correct: str
    wrong: str


@dataclass(frozen=True)
class Task:
    """A binary next-token task: `build(rng, label)` writes a prompt after which `answers[label]`
    is the correct next character and `answers[1 - label]` the wrong one."""

    name: str
    description: str
    answers: tuple[str, str]
    build: Callable[[random.Random, int], str]

    def example(self, rng: random.Random, label: int) -> Example:
        """An example whose correct answer is `answers[label]` (prompts longer than
        `MAX_PROMPT_CHARS` are redrawn)."""
        for _ in range(100):
            prompt = self.build(rng, label)
            if len(prompt) <= MAX_PROMPT_CHARS:
                return Example(prompt, self.answers[label], self.answers[1 - label])
        raise RuntimeError(f"task {self.name} keeps writing prompts over {MAX_PROMPT_CHARS} chars")

    def generate(self, rng: random.Random) -> Example:
        """An example with a label drawn uniformly from `rng`."""
        return self.example(rng, rng.randrange(2))


@dataclass(frozen=True)
class TaskBatch:
    """Encoded examples: `tokens` [n, ctx] left-padded so the prediction is at the last position,
    and the ids of the `correct` [n] and `wrong` [n] next tokens."""

    tokens: torch.Tensor
    correct: torch.Tensor
    wrong: torch.Tensor


# ---------------------------------------------------------------------------------------------
# Shared pieces of prompts. Each draws from `rng` the same way whatever it returns, so that the
# builders below consume the same random numbers for both labels.


def _literal(rng: random.Random) -> str:
    """A small constant or name: an int, a variable or a quoted word."""
    choices = (str(rng.randrange(100)), rng.choice(NAMES), repr(rng.choice(WORDS)))
    return rng.choice(choices)


def _literals(rng: random.Random, low: int, high: int) -> str:
    """Between `low` and `high` literals, comma-separated."""
    return ", ".join(_literal(rng) for _ in range(rng.randint(low, high)))


def _maybe(rng: random.Random, text: str) -> str:
    """`text` half of the time, else nothing."""
    return text if rng.randrange(2) else ""


# ---------------------------------------------------------------------------------------------
# The builders: `build(rng, label) -> prompt`, the deciding feature chosen by `label`.


def _quote(rng: random.Random, label: int) -> str:
    var, other = rng.sample(NAMES, 2)
    other_quote = rng.choice(QUOTES)
    earlier = _maybe(rng, f"{other} = {other_quote}{rng.choice(WORDS)}{other_quote}\n")
    func = rng.choice(FUNCS)
    opener = rng.choice([f"{var} = ", "print(", f"{var}[", f"{func}({var}, ", f"if {var} == "])
    return f"{earlier}{opener}{QUOTES[label]}{rng.choice(WORDS)}"


def _bracket_depth(rng: random.Random, label: int) -> str:
    var, arg = rng.sample(NAMES, 2)
    scope = _maybe(rng, f"def {rng.choice(FUNCS)}({arg}):\n    ")
    head = rng.choice([f"{var} = ", "return ", f"{var} += "])
    earlier = _literals(rng, 0, 2)
    inner = _literals(rng, 1, 3)
    nested = f"[[{earlier}], [{inner}]" if earlier else f"[[{inner}]"
    flat = f"[{earlier}, {inner}]" if earlier else f"[{inner}]"
    return scope + head + (nested, flat)[label]


def _set_or_string(rng: random.Random, label: int) -> str:
    var, other, item, source = rng.sample(NAMES, 4)
    inits = ("set()", rng.choice(['""', "''", "str()"]))
    binding = f"{var} = {inits[label]}\n"
    distractor = _maybe(rng, f"{other} = {inits[1 - label]}\n")
    bindings = rng.choice([binding + distractor, distractor + binding])
    return f"{bindings}for {item} in {source}:\n    {var}"


def _closer(rng: random.Random, label: int) -> str:
    var, seq, arg = rng.sample(NAMES, 3)
    func, inner_func = rng.choice(FUNCS), rng.choice(FUNCS)
    call = rng.choice(["print(", f"{var} = len(", f"{func}(", f"return {func}(", f"{var} = sum("])
    index = rng.choice([f"{var} = [", f"{seq}[", "return [", f"{var} = {seq}["])
    before = _maybe(rng, f"{_literal(rng)}, ")
    inner = rng.choice(
        [f"{inner_func}({arg})", f"{seq}[{arg}]", f"({arg} + 1)", f"len({arg})", f"{seq}[-1]"]
    )
    return (call, index)[label] + before + inner


def _indent(rng: random.Random, label: int) -> str:
    func = rng.choice(FUNCS)
    arg, other = rng.sample(NAMES, 2)
    header = rng.choice(
        [f"if {arg}:", f"for {other} in {arg}:", f"while {arg} > 0:", "try:", f"if not {arg}:"]
    )
    statement = rng.choice(
        [f"{arg} += 1", f"print({arg})", f"{other} = len({arg})", f"{arg}.sort()", f"assert {arg}"]
    )
    earlier = _maybe(rng, f"{other} = {_literal(rng)}\n    ")
    return f"def {func}({arg}):\n    {earlier}{(header, statement)[label]}\n    "


def _def_arity(rng: random.Random, label: int) -> str:
    func = rng.choice(FUNCS)
    first, second = rng.sample(PARAMS, 2)
    annotation = _maybe(rng, rng.choice([": int", ": str", ": float", ": list"]))
    op = rng.choice("+-*")
    bodies = (f"{first} {op} {second}", f"{first} {op} {rng.randrange(2, 10)}")
    out, arg = rng.sample(NAMES, 2)
    call = rng.choice([f"{out} = {func}(", f"print({func}(", f"{out}.append({func}("])
    params = (f"{first}{annotation}, {second}", f"{first}{annotation}")[label]
    return f"def {func}({params}):\n    return {bodies[label]}\n{call}{arg}"


def _loop_index(rng: random.Random, label: int) -> str:
    seq, acc = rng.sample(NAMES, 2)
    bound = rng.choice([f"len({seq})", "n", str(rng.randrange(2, 100))])
    earlier = _maybe(rng, f"{acc} = 0\n")
    body = rng.choice([f"{acc} += {seq}[", f"print({seq}[", f"{seq}[", f"if {seq}["])
    return f"{earlier}for {'ij'[label]} in range({bound}):\n    {body}"


def _flag_flip(rng: random.Random, label: int) -> str:
    flag = rng.choice(FLAGS)
    item, other = rng.sample(NAMES, 2)
    condition = rng.choice(
        [f"{item} == {_literal(rng)}", f"not {item}", f"{item} is None", f"{item} in {other}"]
    )
    earlier = _maybe(rng, f"{other} = {_literal(rng)}\n")
    return f"{flag} = {('False', 'True')[label]}\n{earlier}if {condition}:\n    {flag} = "


TASKS: dict[str, Task] = {
    task.name: task
    for task in [
        Task(
            "quote",
            "Close a string with the quote that opened it.",
            ('"', "'"),
            _quote,
        ),
        Task(
            "bracket_depth",
            "After a closing ], close the outer list too (]) or end the line (\\n), "
            "by nesting depth.",
            ("]", "\n"),
            _bracket_depth,
        ),
        Task(
            "set_or_string",
            "A variable bound to set() continues with .add( (.), one bound to a string with "
            "+= ( ).",
            (".", " "),
            _set_or_string,
        ),
        Task(
            "closer",
            "After a complete inner call or index, close the outer opener: ( with ), [ with ].",
            (")", "]"),
            _closer,
        ),
        Task(
            "indent",
            "In a function body, a line ending with : is followed by a deeper indent ( ); "
            "any other line by the next statement, here return (r).",
            (" ", "r"),
            _indent,
        ),
        Task(
            "def_arity",
            "Calling a function defined with two parameters continues with , after the first "
            "argument; one defined with one parameter closes with ).",
            (",", ")"),
            _def_arity,
        ),
        Task(
            "loop_index",
            "Index a sequence inside a for loop with the loop's variable (i or j).",
            ("i", "j"),
            _loop_index,
        ),
        Task(
            "flag_flip",
            "A flag set to False is later set to True (T), one set to True is set to False (F).",
            ("T", "F"),
            _flag_flip,
        ),
    ]
}


def get_task(name: str) -> Task:
    """The registered task called `name`; KeyError lists the known names."""
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None


# ---------------------------------------------------------------------------------------------
# Batches, evaluation sets and the contrast loss


def encode_examples(
    examples: Sequence[Example], ctx: int, tokenizer: CharTokenizer = TOKENIZER
) -> TaskBatch:
    """Encode prompts left-padded to `ctx` tokens, the prediction at the last position.

    Raises ValueError for a prompt longer than `ctx` or an answer that is not one token.
    """
    tokens = torch.full((len(examples), ctx), tokenizer.pad_id, dtype=torch.long)
    answers = []
    for row, example in enumerate(examples):
        ids = tokenizer.encode(example.prompt)
        if len(ids) > ctx:
            raise ValueError(f"prompt of {len(ids)} tokens exceeds ctx={ctx}: {example.prompt!r}")
        tokens[row, ctx - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        pair = tokenizer.encode(example.correct + example.wrong)
        if len(example.correct) != 1 or len(example.wrong) != 1:
            raise ValueError(f"answers must be single characters: {example!r}")
        answers.append(pair)
    pairs = torch.tensor(answers, dtype=torch.long).reshape(len(examples), 2)
    return TaskBatch(tokens, pairs[:, 0], pairs[:, 1])


def _stable_seed(text: str) -> int:
    """A seed from a string, the same in every process (unlike the salted `hash`)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def _in_eval_slice(prompt: str) -> bool:
    """Whether `prompt` belongs to the slice of prompt space kept for evaluation."""
    return _stable_seed(prompt) % EVAL_HASH_BUCKETS == 0


def _draw(task: Task, rng: random.Random, label: int, for_eval: bool) -> Example:
    """An example with the given label, from the evaluation slice or from outside it."""
    while True:
        example = task.example(rng, label)
        if _in_eval_slice(example.prompt) == for_eval:
            return example


@functools.lru_cache(maxsize=64)
def _eval_examples(name: str, n: int) -> tuple[Example, ...]:
    task = get_task(name)
    rng = random.Random(_stable_seed(f"eval/{name}"))
    examples: list[Example] = []
    seen: set[str] = set()
    for _ in range(200 * n):
        if len(examples) == n:
            break
        example = _draw(task, rng, len(examples) % 2, for_eval=True)
        if example.prompt not in seen:
            seen.add(example.prompt)
            examples.append(example)
    else:
        raise RuntimeError(f"task {name} has too few distinct prompts for {n} eval examples")
    return tuple(examples)


def _as_task(task: Task | str) -> Task:
    return get_task(task) if isinstance(task, str) else task


def eval_set(task: Task | str, ctx: int = 64, n: int = 256) -> TaskBatch:
    """The fixed evaluation set of a registered task: `n` distinct prompts, labels alternating
    (so exactly balanced for even `n`), the same in every process. A smaller `n` gives a prefix
    of a larger one."""
    examples = _eval_examples(_as_task(task).name, n)
    return encode_examples(examples, ctx)


def train_batch(task: Task | str, n: int, ctx: int, generator: torch.Generator) -> TaskBatch:
    """`n` fresh training rows, half of each label, deterministic given the generator's state.
    Prompts from the evaluation slice are redrawn, so no evaluation prompt is trained on."""
    task = _as_task(task)
    rng = random.Random(int(torch.randint(0, 2**62, (1,), generator=generator)))
    labels = [row % 2 for row in range(n)]
    rng.shuffle(labels)
    return encode_examples([_draw(task, rng, label, for_eval=False) for label in labels], ctx)


def _answer_logits(logits_last: torch.Tensor, correct: torch.Tensor, wrong: torch.Tensor):
    pick = torch.stack([correct, wrong], dim=1).to(logits_last.device)
    return logits_last.gather(1, pick).unbind(1)


def contrast_loss(
    logits_last: torch.Tensor, correct: torch.Tensor, wrong: torch.Tensor
) -> torch.Tensor:
    """Per-row binary cross-entropy between the two answers, -log softmax([l_correct,
    l_wrong])[0], from last-position logits [n, V]; returns [n]."""
    l_correct, l_wrong = _answer_logits(logits_last, correct, wrong)
    return F.softplus(l_wrong - l_correct)


def contrast_accuracy(
    logits_last: torch.Tensor, correct: torch.Tensor, wrong: torch.Tensor
) -> torch.Tensor:
    """Fraction of rows (a 0-d tensor) whose correct answer has the larger logit."""
    l_correct, l_wrong = _answer_logits(logits_last, correct, wrong)
    return (l_correct > l_wrong).float().mean()
