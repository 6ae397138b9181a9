"""The weight graph, ablation and circuit extraction on a hand-built model with a planted circuit.

The planted task: a prompt of filler letters ends in ``a`` (answer ``A``) or ``b`` (answer
``B``). The planted model solves it through exactly four nodes: the embedding puts +1 / -1 on
residual channel 0, the MLP reads it (``ln2`` read 0), neuron 0 fires for ``a``, writes residual
channel 1, and the unembedding reads channel 1 (``ln_final`` read 1) into the A / B logits.
Distractor weights (attention, a second neuron, a third logit) are nonzero but irrelevant.
"""

from __future__ import annotations

import math
import random

import networkx as nx
import pytest
import torch

from sparsecircuits.circuits.ablate import ablate, evaluate, mean_activations
from sparsecircuits.circuits.graph import weight_graph
from sparsecircuits.circuits.prune import PruneConfig, find_circuits
from sparsecircuits.config import ACT_SPARSITY_SITES, ModelConfig
from sparsecircuits.data import tasks as task_registry
from sparsecircuits.data.tasks import Task
from sparsecircuits.data.tokenizer import TOKENIZER
from sparsecircuits.model import SparseGPT

PLANTED = "planted_last_char"
FILLER = "cdefgh"
ID = {ch: TOKENIZER.encode(ch)[0] for ch in "abABZ" + FILLER}
PLANTED_NODES = {
    "blocks.0.ln2.hook_normalized:0",
    "blocks.0.mlp.hook_post:0",
    "blocks.0.hook_mlp_out:1",
    "ln_final.hook_normalized:1",
}
PLANTED_EDGES = {
    ("blocks.0.ln2.hook_normalized:0", "blocks.0.mlp.hook_post:0"),
    ("blocks.0.mlp.hook_post:0", "blocks.0.hook_mlp_out:1"),
    ("blocks.0.hook_mlp_out:1", "ln_final.hook_normalized:1"),
}


def _build(rng: random.Random, label: int) -> str:
    filler = "".join(rng.choice(FILLER) for _ in range(rng.randint(3, 10)))
    return filler + "ab"[label]


PLANTED_TASK = Task(PLANTED, "Answer A after a final a, B after a final b.", ("A", "B"), _build)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread avoids thread hand-offs, which cost more than the work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def planted_task(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(task_registry.TASKS, PLANTED, PLANTED_TASK)
    return PLANTED


def planted_model(distractors: bool = True) -> SparseGPT:
    """The model described in the module docstring; every other weight and bias is zero."""
    cfg = ModelConfig(vocab_size=99, n_ctx=16, d_model=8, n_layers=1, n_heads=1, d_head=4,
                      d_mlp=8, kernel_backend="dense")
    model = SparseGPT(cfg)
    block = model.blocks[0]
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith(".w"):  # norm gains stay 1
                p.zero_()
        model.W_E[ID["a"], 0], model.W_E[ID["b"], 0] = 1.0, -1.0
        block.mlp.fc_in.W[0, 0] = 1.0
        block.mlp.fc_out.W[1, 0] = 1.0
        model.unembed.W[ID["A"], 1], model.unembed.W[ID["B"], 1] = 3.0, -3.0
        model.unembed.b[ID["A"]], model.unembed.b[ID["B"]] = -2.0, 2.0
        if distractors:
            for ch in FILLER:
                model.W_E[ID[ch], 4] = 1.0
            model.W_pos[:, 6] = 0.5
            block.attn.q.W[1, 6] = block.attn.k.W[1, 6] = block.attn.v.W[0, 4] = 1.0
            block.attn.o.W[5, 0] = 1.0
            block.mlp.fc_in.W[3, 4] = block.mlp.fc_out.W[7, 3] = 1.0
            model.unembed.W[ID["Z"], 7] = 1.0
    model.eval()
    return model


# --- weight graph ------------------------------------------------------------------------------


def test_weight_edges_are_the_nonzero_weights() -> None:
    model = planted_model()
    graph = weight_graph(model)
    nonzero = sum(int(p.count_nonzero()) for name, p in model.named_parameters()
                  if name in model.sparse_parameters() and p.dim() == 2)
    weight_edges = [e for e in graph.edges(data="kind") if e[2] not in ("residual", "qk")]
    print(f"weight edges {len(weight_edges)}, nonzero weights {nonzero}")
    assert len(weight_edges) == nonzero
    edge = graph.edges["blocks.0.ln2.hook_normalized:0", "blocks.0.mlp.hook_post:0"]
    assert edge == {"weight": 1.0, "sign": 1, "param": "blocks.0.mlp.fc_in.W", "kind": "mlp_in"}
    edge = graph.edges["ln_final.hook_normalized:1", f"logits:{ID['B']}"]
    assert (edge["weight"], edge["sign"], edge["kind"]) == (-3.0, -1, "unembed")
    assert graph.edges["blocks.0.attn.hook_v:0", "blocks.0.hook_attn_out:5"]["kind"] == "o"
    assert graph.nodes[f"logits:{ID['A']}"]["bias"] == -2.0
    assert graph.nodes["blocks.0.attn.hook_k:3"]["head"] == 0
    assert graph.nodes["blocks.0.mlp.hook_post:3"]["head"] is None


def test_residual_and_qk_edges_make_paths() -> None:
    graph = weight_graph(planted_model())
    # per channel: embed -> 3 reads, attn_out -> 2, mlp_out -> 1 (gains are 1, never zero)
    residual = [e for e in graph.edges(data="kind") if e[2] == "residual"]
    assert len(residual) == 8 * (3 + 2 + 1)
    assert graph.edges["blocks.0.hook_mlp_out:1", "ln_final.hook_normalized:1"]["param"] == (
        "ln_final.w")
    assert graph.edges["blocks.0.attn.hook_q:1", "blocks.0.attn.hook_k:1"]["weight"] == 0.5
    path = nx.shortest_path(graph, f"tokens:{ID['a']}", f"logits:{ID['A']}")
    assert set(path[2:-1]) == PLANTED_NODES


# --- ablation against hand computation ----------------------------------------------------------


def _gelu(x: float) -> float:
    return 0.5 * x * (1 + math.erf(x / math.sqrt(2)))


def _rms_scale(values: list[float], width: int = 8, eps: float = 1e-6) -> float:
    return 1 / math.sqrt(sum(v * v for v in values) / width + eps)


def _hand_logits(last: str, neuron: float | None = None) -> tuple[float, float]:
    """A and B logits of the model without distractors, at a prompt ending in ``last``
    (a or b), with neuron 0 set to ``neuron`` if given."""
    s = {"a": 1.0, "b": -1.0}[last]
    n0 = _gelu(s * _rms_scale([s])) if neuron is None else neuron
    y1 = n0 * _rms_scale([s, n0])
    return 3 * y1 - 2, -3 * y1 + 2


def _last_logits(model: SparseGPT, prompts: list[str]) -> torch.Tensor:
    tokens = torch.zeros(len(prompts), 16, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        tokens[row, 16 - len(prompt):] = torch.tensor(TOKENIZER.encode(prompt))
    return model(tokens)[:, -1][:, [ID["A"], ID["B"]]]


def test_zero_and_mean_ablation_match_hand_computation() -> None:
    model = planted_model(distractors=False)
    prompts = ["cda", "hhb"]
    expected = torch.tensor([_hand_logits("a"), _hand_logits("b")])
    torch.testing.assert_close(_last_logits(model, prompts), expected)
    node = "blocks.0.mlp.hook_post:0"
    with ablate(model, [node], "zero"):
        zero = _last_logits(model, prompts)
    torch.testing.assert_close(zero, torch.tensor([_hand_logits("a", 0.0),
                                                   _hand_logits("b", 0.0)]))
    # reference: two rows of 16 positions; neuron 0 is nonzero only at the a / b positions
    reference = torch.zeros(2, 16, dtype=torch.long)
    reference[0, -3:] = torch.tensor(TOKENIZER.encode("aab"))
    reference[1, -2:] = torch.tensor(TOKENIZER.encode("cb"))
    on_a, on_b = _gelu(_rms_scale([1.0])), _gelu(-_rms_scale([1.0]))
    mean = (2 * on_a + 2 * on_b) / 32
    with ablate(model, [node], "mean", reference):
        ablated = _last_logits(model, prompts)
    torch.testing.assert_close(ablated, torch.tensor([_hand_logits("a", mean),
                                                      _hand_logits("b", mean)]))
    last_position_mean = on_b  # both reference rows end in b
    with ablate(model, [node], "mean", reference, per_position=True):
        ablated = _last_logits(model, prompts)
    torch.testing.assert_close(ablated, torch.tensor([_hand_logits("a", last_position_mean),
                                                      _hand_logits("b", last_position_mean)]))
    assert mean_activations(model, reference)["blocks.0.mlp.hook_post"][0] == pytest.approx(mean)


@pytest.mark.parametrize("method", ["mean", "resample"])
def test_last_only_forward_ablates_like_the_full_forward(method: str) -> None:
    """Per-position replacements line up with the last position when the final block runs
    there only (the extractor's forward)."""
    model = planted_model()
    generator = torch.Generator().manual_seed(0)
    reference = torch.randint(0, 99, (5, 16), generator=generator)
    tokens = torch.randint(0, 99, (5, 16), generator=generator)
    nodes = ["blocks.0.mlp.hook_post:0", "blocks.0.attn.hook_q:1", "blocks.0.hook_mlp_out:1"]
    with ablate(model, nodes, method, reference, per_position=True):
        full = model(tokens)[:, -1]
        last = model(tokens, last_only=True)[:, 0]
    torch.testing.assert_close(last, full)


def test_edge_ablation_masks_one_weight_and_restores_it(planted_task: str) -> None:
    model = planted_model(distractors=False)
    edge = ("blocks.0.ln2.hook_normalized:0", "blocks.0.mlp.hook_post:0")
    reference = planted_task  # a named reference: its means are cached
    site = "blocks.0.mlp.hook_post"
    before = mean_activations(model, reference)[site][0]
    with ablate(model, [edge]):
        assert model.blocks[0].mlp.fc_in.W[0, 0] == 0.0
        masked = _last_logits(model, ["ca"])
        assert mean_activations(model, reference)[site][0] == 0.0  # not the stale mean
    assert model.blocks[0].mlp.fc_in.W[0, 0] == 1.0
    assert mean_activations(model, reference)[site][0] == before > 0
    torch.testing.assert_close(masked, torch.tensor([_hand_logits("a", _gelu(0.0))]))
    with pytest.raises(ValueError, match="no weight matrix"):
        ablate(model, [("blocks.0.hook_mlp_out:1", "ln_final.hook_normalized:1")]).__enter__()


def test_resample_from_identical_rows_changes_nothing() -> None:
    model = planted_model()
    tokens = torch.tensor([TOKENIZER.encode("cdefghcdefghcdea")])
    clean = model(tokens)
    with ablate(model, ["blocks.0.mlp.hook_post:0", "blocks.0.attn.hook_v:0"], "resample",
                tokens.repeat(3, 1)):
        torch.testing.assert_close(model(tokens), clean)


def test_evaluate_planted_task(planted_task: str) -> None:
    loss, accuracy = evaluate(planted_model(), planted_task)
    assert accuracy == 1.0
    assert loss < 0.05


# --- circuit extraction --------------------------------------------------------------------------


def test_extractor_recovers_the_planted_circuit(planted_task: str) -> None:
    model = planted_model()
    graph = weight_graph(model)
    circuit = find_circuits(model, [planted_task], graph)[planted_task]
    attrs = circuit.graph.graph
    nodes, edges = set(circuit.graph.nodes), set(circuit.graph.edges)
    node_precision = len(nodes & PLANTED_NODES) / len(nodes)
    node_recall = len(nodes & PLANTED_NODES) / len(PLANTED_NODES)
    edge_precision = len(edges & PLANTED_EDGES) / max(1, len(edges))
    edge_recall = len(edges & PLANTED_EDGES) / len(PLANTED_EDGES)
    print(f"planted circuit: node precision {node_precision:.2f} recall {node_recall:.2f}, "
          f"edge precision {edge_precision:.2f} recall {edge_recall:.2f}; "
          f"losses full {attrs['loss_full']:.3f} circuit {attrs['loss_circuit']:.3f} "
          f"ablated {attrs['loss_ablated']:.3f} random {attrs['loss_random']:.3f}")
    assert attrs["solved"] and attrs["n_nodes"] == len(nodes)
    assert node_recall == 1.0 and edge_recall == 1.0
    assert node_precision >= 0.8 and edge_precision >= 0.75
    assert attrs["loss_circuit"] <= 0.15 < attrs["loss_ablated"]
    assert attrs["loss_random"] > attrs["loss_circuit"]
    importance = nx.get_node_attributes(circuit.graph, "importance")
    assert all(importance[n] > 0.15 for n in PLANTED_NODES)


def test_unsolved_task_has_no_circuit(planted_task: str) -> None:
    model = planted_model()
    with torch.no_grad():
        model.unembed.b.zero_()
        model.unembed.W.mul_(0.01)  # the right sign, far too little margin
    circuit = find_circuits(model, [planted_task], weight_graph(model),
                            config=PruneConfig(target_loss=0.15))[planted_task]
    assert circuit.logits is None
    assert circuit.graph.number_of_nodes() == 0
    assert not circuit.graph.graph["solved"]
    assert circuit.graph.graph["loss_full"] > 0.15


@pytest.mark.parametrize("per_position", [False, True])
@pytest.mark.parametrize("act_sites", [(), ACT_SPARSITY_SITES,
                                       tuple(s for s in ACT_SPARSITY_SITES
                                             if s != "mlp.hook_post")])
def test_importances_equal_full_forward_ablations(act_sites: tuple[str, ...],
                                                  per_position: bool) -> None:
    """Starting a node's ablation where it can first change anything, and computing only the
    MLP neurons the circuit keeps, skip only work that cannot change the loss: the
    importances equal plain full forwards under ``ablate`` (random 2-layer model; with
    activation sparsity at every site the MLP shortcuts are off; at every site but the
    neurons, the restricted MLPs stay on and the neuron's linear shortcut is off)."""
    from sparsecircuits.circuits.prune import _importances, _Pruner, node_ids
    from sparsecircuits.data.tasks import contrast_loss, eval_set

    cfg = ModelConfig(d_model=16, n_layers=2, n_heads=2, d_head=8, d_mlp=32, n_ctx=64,
                      init_std=0.4, act_sparsity=0.3 if act_sites else 0.0,
                      act_sparsity_sites=list(act_sites),
                      kernel_backend="dense")  # large weights: large effects
    model = SparseGPT(cfg, seed=1)
    config = PruneConfig(importance_examples=3, per_position=per_position)
    pruner, nodes = _Pruner(model, config), node_ids(model)
    generator = torch.Generator().manual_seed(2)
    keep = (torch.rand(len(nodes), generator=generator) < 0.6).float()
    logits = torch.randn(len(nodes), generator=generator)
    got = _importances(pruner, "quote", keep, logits, pruner.baseline("quote"), nodes)
    assert len(got) == int(keep.sum())
    batch = eval_set("quote", cfg.n_ctx, 3)

    @torch.no_grad()
    def loss(kept: torch.Tensor) -> float:
        pruned = [node for node, k in zip(nodes, kept.tolist(), strict=True) if not k]
        with ablate(model, pruned, "mean", "quote", per_position=per_position):
            last = model(batch.tokens)[:, -1]
        return float(contrast_loss(last, batch.correct, batch.wrong).mean())

    reference = loss(keep)
    for node, value in got.items():
        without = keep.clone()
        without[nodes.index(node)] = 0.0
        assert value == pytest.approx(loss(without) - reference, rel=1e-4, abs=1e-6), node
    assert max(abs(v) for n, v in got.items() if n.startswith("blocks.1")) > 0.01


@pytest.mark.parametrize("smallest", [1, 537, 1400, 2000])
@pytest.mark.parametrize("tolerance", [0.0, 0.02, 0.1])
def test_search_finds_the_smallest_size_to_within_its_tolerance(tolerance: float,
                                                                 smallest: int) -> None:
    """A fake loss that meets the target from ``smallest`` kept nodes on: the search returns
    it exactly without tolerance, never more than the tolerance above it, and the whole model
    with its own loss when nothing smaller will do; it starts at the number of positive
    logits (here 1000)."""
    from sparsecircuits.circuits.prune import _Pruner

    tried: list[int] = []

    class Threshold(_Pruner):
        def losses(self, groups, baseline, start=None):
            tried.extend(int(keep.sum()) for _, keep in groups)
            return torch.tensor([0.1 if float(keep.sum()) >= smallest else 1.0
                                 for _, keep in groups])

    pruner = Threshold(planted_model(), PruneConfig(target_loss=0.15, size_tolerance=tolerance))
    logits = -torch.rand(2000, generator=torch.Generator().manual_seed(0))
    logits[torch.randperm(2000, generator=torch.Generator().manual_seed(1))[:1000]] += 1.0
    keep, loss = pruner.smallest(None, logits, None, 0.12)
    size = int(keep.sum())
    assert smallest <= size <= smallest + max(1, tolerance * size)
    assert size == smallest or tolerance > 0
    assert loss == pytest.approx(0.12 if smallest == 2000 else 0.1)
    assert tried[0] == 1000
    assert keep[logits.argsort(descending=True)[:size]].all()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_task_circuit_does_not_depend_on_the_other_tasks(
    planted_task: str, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    """Extracted alone, or beside another task that starts warm (fewer steps), in turn or in
    two worker threads, the planted task's circuit is the same: its own random stream and
    its own step count."""
    twin = "planted_twin"
    monkeypatch.setitem(task_registry.TASKS, twin, PLANTED_TASK)
    model = planted_model()
    graph = weight_graph(model)
    alone = find_circuits(model, [planted_task], graph)[planted_task]
    warm = {twin: alone.logits}
    both = find_circuits(model, [twin, planted_task], graph, warm=warm, workers=workers)
    assert set(both[planted_task].graph.nodes) == set(alone.graph.nodes)
    for key in ("loss_circuit", "loss_ablated", "loss_random"):
        assert both[planted_task].graph.graph[key] == pytest.approx(alone.graph.graph[key],
                                                                    rel=1e-5)
    torch.testing.assert_close(both[planted_task].logits, alone.logits)
