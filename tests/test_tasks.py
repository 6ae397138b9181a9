"""Tasks: balanced, short, decided by the prompt, fixed evaluation sets, no leakage, the loss."""

import math
import os
import random
import re
import subprocess
import sys

import pytest
import torch

from sparsecircuits.data.tasks import (
    MAX_PROMPT_CHARS,
    TASKS,
    Example,
    TaskBatch,
    contrast_accuracy,
    contrast_loss,
    encode_examples,
    eval_set,
    get_task,
    train_batch,
)
from sparsecircuits.data.tokenizer import TOKENIZER

# Independent rule-based oracles: each reads a prompt and says what must come next.


def _last_line(prompt: str) -> str:
    return prompt.split("\n")[-1]


def _quote(prompt: str) -> str:
    return [ch for ch in prompt if ch in "\"'"][-1]  # the opener of the string left open


def _bracket_depth(prompt: str) -> str:
    line = _last_line(prompt)
    return "]" if line.count("[") > line.count("]") else "\n"


def _set_or_string(prompt: str) -> str:
    var = _last_line(prompt).strip()
    value = re.search(rf"^{var} = (.*)$", prompt, re.MULTILINE).group(1)
    return "." if value == "set()" else " "


def _closer(prompt: str) -> str:
    stack = []
    for ch in _last_line(prompt):
        if ch in "([":
            stack.append(ch)
        elif ch in ")]":
            stack.pop()
    return {"(": ")", "[": "]"}[stack[-1]]


def _indent(prompt: str) -> str:
    return " " if prompt.split("\n")[-2].endswith(":") else "r"


def _def_arity(prompt: str) -> str:
    params = re.match(r"def \w+\(([^)]*)\):", prompt).group(1)
    return "," if "," in params else ")"


def _loop_index(prompt: str) -> str:
    return re.search(r"for (\w+) in range", prompt).group(1)


def _flag_flip(prompt: str) -> str:
    return {"False": "T", "True": "F"}[re.match(r"\w+ = (\w+)\n", prompt).group(1)]


ORACLES = {
    "quote": _quote,
    "bracket_depth": _bracket_depth,
    "set_or_string": _set_or_string,
    "closer": _closer,
    "indent": _indent,
    "def_arity": _def_arity,
    "loop_index": _loop_index,
    "flag_flip": _flag_flip,
}


def _samples(name: str, count: int = 2000) -> list[Example]:
    rng = random.Random(0)
    return [TASKS[name].generate(rng) for _ in range(count)]


def _prompts(tokens: torch.Tensor) -> list[str]:
    return [TOKENIZER.decode(row.tolist()) for row in tokens]


def _oracle_agrees(name: str, batch: TaskBatch) -> bool:
    """Whether every row's correct token is what the task's oracle reads from the row's prompt."""
    prompts = _prompts(batch.tokens)
    answers = TOKENIZER.decode(batch.correct.tolist())
    return all(ORACLES[name](p) == a for p, a in zip(prompts, answers, strict=True))


def test_registry():
    assert list(ORACLES) == list(TASKS)
    assert get_task("quote") is TASKS["quote"]
    with pytest.raises(KeyError, match="bracket_depth"):
        get_task("no_such_task")


@pytest.mark.parametrize("name", list(TASKS))
def test_generated_examples(name: str):
    task = TASKS[name]
    examples = _samples(name)
    corrects = [ex.correct for ex in examples]
    assert 0.45 < corrects.count(task.answers[0]) / len(examples) < 0.55
    assert all({ex.correct, ex.wrong} == set(task.answers) for ex in examples)
    assert max(len(ex.prompt) for ex in examples) <= MAX_PROMPT_CHARS
    assert len({ex.prompt for ex in examples}) > 1000  # thousands of distinct prompts
    assert all(TOKENIZER.unk_id not in TOKENIZER.encode(ex.prompt) for ex in examples)


@pytest.mark.parametrize("name", list(TASKS))
def test_the_prompt_decides_the_answer(name: str):
    examples = _samples(name)
    answer_of: dict[str, str] = {}
    for ex in examples:
        assert ORACLES[name](ex.prompt) == ex.correct, ex
        assert answer_of.setdefault(ex.prompt, ex.correct) == ex.correct


@pytest.mark.parametrize("name", list(TASKS))
def test_one_seed_with_both_labels_gives_a_minimal_pair(name: str):
    task = TASKS[name]
    for seed in range(200):
        first, second = (task.example(random.Random(seed), label) for label in (0, 1))
        assert first.prompt != second.prompt
        assert (first.correct, first.wrong) == (second.wrong, second.correct)


@pytest.mark.parametrize("name", list(TASKS))
def test_eval_set_is_fixed_balanced_and_left_padded(name: str):
    batch = eval_set(name)
    assert batch.tokens.shape == (256, 64)
    again = eval_set(TASKS[name])
    assert torch.equal(batch.tokens, again.tokens) and torch.equal(batch.correct, again.correct)
    first_answer = TOKENIZER.encode(TASKS[name].answers[0])[0]
    assert (batch.correct == first_answer).sum() == 128
    prompts = _prompts(batch.tokens)
    assert len(set(prompts)) == 256
    assert _oracle_agrees(name, batch)
    # Left padding: the last position holds the prompt's last character, padding only before.
    assert (batch.tokens[:, -1] != TOKENIZER.pad_id).all()
    is_pad = batch.tokens == TOKENIZER.pad_id
    assert torch.equal(is_pad, is_pad.cummin(dim=1).values)
    wider = eval_set(name, ctx=80, n=64)
    assert torch.equal(wider.tokens[:, 16:], batch.tokens[:64])  # a prefix, padded wider


@pytest.mark.parametrize("name", list(TASKS))
def test_training_rows_are_deterministic_balanced_and_never_eval_prompts(name: str):
    batch = train_batch(name, 2048, 64, torch.Generator().manual_seed(0))
    same = train_batch(name, 2048, 64, torch.Generator().manual_seed(0))
    assert torch.equal(batch.tokens, same.tokens) and torch.equal(batch.wrong, same.wrong)
    other = train_batch(name, 2048, 64, torch.Generator().manual_seed(1))
    assert not torch.equal(batch.tokens, other.tokens)
    assert (batch.correct == TOKENIZER.encode(TASKS[name].answers[0])[0]).sum() == 1024
    prompts = _prompts(batch.tokens)
    assert set(prompts).isdisjoint(_prompts(eval_set(name, n=1024).tokens))
    assert _oracle_agrees(name, batch)


def test_eval_sets_are_identical_in_another_process():
    code = (
        "from sparsecircuits.data.tasks import TASKS, eval_set\n"
        "print([int((eval_set(n).tokens * eval_set(n).correct[:, None]).sum()) for n in TASKS])"
    )
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    here = [int((eval_set(n).tokens * eval_set(n).correct[:, None]).sum()) for n in TASKS]
    assert result.stdout.strip() == str(here)


def test_encode_examples_pads_left_and_rejects_what_does_not_fit():
    batch = encode_examples([Example("ab", "c", "d"), Example("", "e", "f")], ctx=4)
    a, b, c, d, e, f = TOKENIZER.encode("abcdef")
    assert batch.tokens.tolist() == [[0, 0, a, b], [0, 0, 0, 0]]
    assert batch.correct.tolist() == [c, e] and batch.wrong.tolist() == [d, f]
    with pytest.raises(ValueError, match="'abcde'"):
        encode_examples([Example("abcde", "c", "d")], ctx=4)
    with pytest.raises(ValueError, match="single"):
        encode_examples([Example("ab", "]]", "]")], ctx=4)


def test_contrast_loss_and_accuracy_by_hand():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]])
    correct, wrong = torch.tensor([0, 2]), torch.tensor([1, 1])
    expected = [
        -math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(0.5))),
        -math.log(math.exp(1.0) / (math.exp(1.0) + math.exp(3.0))),
    ]
    assert contrast_loss(logits, correct, wrong).tolist() == pytest.approx(expected)
    assert contrast_accuracy(logits, correct, wrong).item() == 0.5
