"""topk_mask (torch twin and Triton radix select) against a stable-sort oracle.

The oracle ranks by (-|w|, flat index) with a stable argsort: no threshold, no kthvalue.
"""

from __future__ import annotations

import pytest
import torch

from sparsecircuits.kernels import topk_mask, topk_mask_torch, triton_available

# triton 3.6's interpreter reads loop bounds through a 1-element array (fine below numpy 2.4)
pytestmark = pytest.mark.filterwarnings(
    "ignore:Conversion of an array with ndim > 0:DeprecationWarning"
)
needs_triton = pytest.mark.skipif(not triton_available(), reason="triton is not installed")
BACKENDS = ["torch", pytest.param("triton", marks=[needs_triton, pytest.mark.interpreter])]


def top_by_sort(magnitude: torch.Tensor, count: int) -> torch.Tensor:
    """Mask of the ``count`` largest along the last dim, ties to the lower index, by sorting."""
    order = torch.argsort(-magnitude, dim=-1, stable=True)
    mask = torch.zeros_like(magnitude, dtype=torch.bool)
    return mask.scatter(-1, order[..., : max(count, 0)], True)


def oracle(weight: torch.Tensor, k: int, min_per_row: int, min_per_col: int) -> torch.Tensor:
    magnitude = weight.abs().double()
    protected = torch.zeros_like(magnitude, dtype=torch.bool)
    if weight.dim() == 2:
        protected |= top_by_sort(magnitude, min_per_row)
        protected |= top_by_sort(magnitude.t(), min_per_col).t()
    rest = magnitude.flatten().masked_fill(protected.flatten(), -1.0)
    chosen = top_by_sort(rest, k - int(protected.sum())).view_as(magnitude)
    return protected | chosen


def tied_weight(out: int = 37, inp: int = 45, seed: int = 0) -> torch.Tensor:
    """Few distinct magnitudes, both signs and exact zeros: ties everywhere."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-3, 4, (out, inp), generator=g).float() * 0.25


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k", [0, 1, 17, 200, 800, 37 * 45 - 1, 37 * 45])
def test_exactly_k_survive_with_ties(backend, k):
    weight = tied_weight()
    mask = topk_mask(weight, k, backend=backend)
    assert mask.dtype == torch.bool and mask.shape == weight.shape
    assert int(mask.sum()) == k
    assert torch.equal(mask, oracle(weight, k, 0, 0))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("k", "min_per_row", "min_per_col"),
    [(300, 2, 0), (300, 0, 3), (300, 2, 2), (40, 2, 0), (100, 4, 4)],
)
def test_floors_protect_each_neuron(backend, k, min_per_row, min_per_col):
    weight = tied_weight(seed=1)
    mask = topk_mask(
        weight, k, min_per_row=min_per_row, min_per_col=min_per_col, backend=backend
    )
    expected = oracle(weight, k, min_per_row, min_per_col)
    assert torch.equal(mask, expected)
    assert int(mask.sum()) == max(k, int(oracle(weight, 0, min_per_row, min_per_col).sum()))
    assert bool((mask.sum(dim=1) >= min_per_row).all())
    assert bool((mask.sum(dim=0) >= min_per_col).all())


@pytest.mark.parametrize("backend", BACKENDS)
def test_vectors_and_continuous_values(backend):
    bias = torch.randn(300, generator=torch.Generator().manual_seed(2))
    mask = topk_mask(bias, 30, min_per_row=5, backend=backend)  # floors ignored for 1-D
    assert torch.equal(mask, oracle(bias, 30, 0, 0))
    weight = torch.randn(64, 48, generator=torch.Generator().manual_seed(3))
    mask = topk_mask(weight, 123, min_per_row=1, backend=backend)
    assert torch.equal(mask, oracle(weight, 123, 1, 0))


@needs_triton
@pytest.mark.interpreter
def test_radix_select_finds_the_kth_largest_of_awkward_values():
    from sparsecircuits.kernels.triton_topk import kth_largest_triton

    values = torch.tensor(
        [0.0, -1.0, float("inf"), 2.0, 2.0, -0.5, 1e-40, -1e-40, 3e38, -float("inf"), 1.5]
    )
    rows = torch.stack([values, values.flip(0), values.roll(3)])
    wide = torch.randn(2, 5000, generator=torch.Generator().manual_seed(4))  # several blocks
    for scores in (rows, wide):
        descending = scores.sort(dim=-1, descending=True).values
        for count in sorted({1, 2, 3, 7, scores.shape[1] - 1, scores.shape[1]}):
            got = kth_largest_triton(scores, count)
            assert torch.equal(got, descending[:, count - 1 : count])


def test_torch_twin_keeps_its_name_and_refuses_bad_input():
    weight = tied_weight()
    assert torch.equal(topk_mask_torch(weight, 50, min_per_row=1), oracle(weight, 50, 1, 0))
    with pytest.raises(ValueError, match="k must be"):
        topk_mask(weight, -1)
    with pytest.raises(ValueError, match="1-D or 2-D"):
        topk_mask(torch.zeros(2, 2, 2), 1)
    with pytest.raises(ValueError, match="backend"):
        topk_mask(weight, 1, backend="cuda")


@pytest.mark.parametrize("shape", [(5, 7), (40,)])
def test_batched_projection_equals_one_tensor_at_a_time(shape):
    generator = torch.Generator().manual_seed(7)
    stack = torch.randn(4, *shape, generator=generator).round(decimals=1)  # many ties
    k = stack[0].numel() // 3
    batched = topk_mask(stack, k, min_per_row=1, min_per_col=1, batched=True)
    for weight, mask in zip(stack, batched, strict=True):
        torch.testing.assert_close(mask, topk_mask(weight, k, min_per_row=1, min_per_col=1))
