"""The projection schedule, the sharkfin and churn, against hand-computed values."""

import math

import pytest
import torch

from sparsecircuits.config import ModelConfig, OptimizerConfig, SparsityConfig
from sparsecircuits.model import SparseGPT
from sparsecircuits.sparsity import (
    Sparsifier,
    density_at,
    learning_rate,
    normalize_grad_rms,
)

SMALL = ModelConfig(d_model=32, n_layers=1, n_heads=2, d_head=8, d_mlp=64, n_ctx=16)


def test_density_schedules():
    lin = SparsityConfig(anneal_start=0.1, anneal_end=0.5)
    assert density_at(0.01, 0, 100, lin) == 1.0
    assert density_at(0.01, 10, 100, lin) == 1.0
    assert density_at(0.01, 30, 100, lin) == pytest.approx(1 - 0.99 * 0.5)
    assert density_at(0.01, 50, 100, lin) == pytest.approx(0.01)
    log = SparsityConfig(anneal_start=0.1, anneal_end=0.5, anneal_shape="loglinear")
    assert density_at(0.01, 30, 100, log) == pytest.approx(0.1)
    assert density_at(0.01, 99, 100, SparsityConfig(enabled=False)) == 1.0


def test_sharkfin_learning_rate():
    sp = SparsityConfig(matrix_density=1 / 16, anneal_end=0.5)
    opt = OptimizerConfig(lr=1.0, warmup=0.1, decay="linear")
    assert learning_rate(4, 100, opt, sp) == pytest.approx(0.5 * 0.96 * math.sqrt(
        (1 / 16) / density_at(1 / 16, 4, 100, sp)))
    assert learning_rate(0, 100, opt, sp) == pytest.approx(0.1 * 0.25)  # sqrt(1/16) = 1/4
    assert learning_rate(75, 100, opt, sp) == pytest.approx(0.25)
    constant = OptimizerConfig(lr=1.0, warmup=0.0, decay="constant")
    assert learning_rate(99, 100, constant, sp) == 1.0
    assert learning_rate(0, 100, OptimizerConfig(lr=1.0, warmup=0.0, sharkfin=False), sp) == 1.0


def test_grad_rms_is_normalized():
    params = [torch.zeros(3, requires_grad=True), torch.zeros(5, requires_grad=True)]
    params[0].grad = torch.tensor([3.0, 0.0, 4.0])
    params[1].grad = torch.full((5,), 2.0)
    rms = normalize_grad_rms(params)
    assert rms == pytest.approx(math.sqrt((9 + 16 + 20) / 8))
    total = torch.cat([p.grad for p in params])
    assert total.square().mean().sqrt().item() == pytest.approx(1.0)


def test_projection_hits_exact_density_with_floor():
    model = SparseGPT(SMALL, seed=3)
    cfg = SparsityConfig(matrix_density=0.2, embed_density=0.25, min_per_neuron=2)
    sparsifier = Sparsifier(model, cfg, total_steps=10)
    sparsifier.project(step=9)
    params = dict(model.named_parameters())
    for name, mask in sparsifier.masks.items():
        target = cfg.matrix_density if name.endswith(".W") and name != "unembed.W" else 0.25
        assert int(mask.sum()) == round(target * mask.numel()), name
        assert (params[name][~mask] == 0).all()
        if mask.dim() == 2 and name.endswith(".W") and name != "unembed.W":
            assert (mask.sum(1) >= 2).all() and (mask.sum(0) >= 2).all(), name
    # Norm gains stay dense.
    assert (params["blocks.0.ln1.w"] != 0).all()


def test_churn_counts_births_deaths_revivals():
    """One 1x4 'embedding' row: the survivors move, and a weight alive after the anneal that
    died and came back counts as a revival; one that never was alive since is a birth."""
    model = SparseGPT(SMALL)
    cfg = SparsityConfig(embed_density=0.5, matrix_density=0.5, min_per_neuron=0)
    sparsifier = Sparsifier(model, cfg, total_steps=1)
    name = "blocks.0.attn.q.b"
    bias = dict(model.named_parameters())[name]
    sparsifier.params = {name: bias}
    sparsifier.targets = {name: 0.5}
    sparsifier.masks = {name: torch.ones_like(bias, dtype=torch.bool)}
    values = torch.zeros_like(bias)

    def step(alive_indices):
        with torch.no_grad():
            bias.copy_(values)
            bias[alive_indices] = 10.0 + torch.arange(len(alive_indices), dtype=bias.dtype)
        return sparsifier.project(step=5)[name]

    first = step(list(range(8)))  # the anneal ends: 8 of 16 survive
    assert (first.births, first.deaths, first.revivals) == (0, 8, 0)
    second = step([0, 1, 2, 3, 4, 5, 6, 8])  # 7 dies, 8 (never alive since) is born
    assert (second.births, second.deaths, second.revivals) == (1, 1, 0)
    third = step([0, 1, 2, 3, 4, 5, 6, 7])  # 7 comes back: a revival; 8 dies
    assert (third.births, third.deaths, third.revivals) == (1, 1, 1)
