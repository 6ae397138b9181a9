"""The fused projection (Triton, under the interpreter) against its torch twin, bit for bit:
the mask (which ``test_kernels_topk`` checks against a sorting oracle) and every field of both
compressed copies."""

from __future__ import annotations

import pytest
import torch

from sparsecircuits.kernels import project, project_torch, triton_available

pytestmark = [
    pytest.mark.skipif(not triton_available(), reason="triton is not installed"),
    pytest.mark.interpreter,
    # triton 3.6's interpreter reads loop bounds through a 1-element array (fine below numpy 2.4)
    pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0:DeprecationWarning"),
]


def assert_same_projection(weight: torch.Tensor, k: int, floors: tuple[int, int],
                           capacity: int | None = None) -> None:
    args = dict(min_per_row=floors[0], min_per_col=floors[1], capacity=capacity)
    twin = project_torch(weight, k, **args)
    fused = project(weight, k, backend="triton", **args)
    assert fused.mask.dtype == torch.bool and torch.equal(fused.mask, twin.mask)
    for ours, theirs in ((fused.rows, twin.rows), (fused.cols, twin.cols)):
        assert ours.shape == theirs.shape
        for field in ("crow", "col", "row", "val"):
            a, b = getattr(ours, field), getattr(theirs, field)
            assert a.dtype == b.dtype and torch.equal(a, b), field


def tied(rows: int, cols: int, seed: int) -> torch.Tensor:
    """Few distinct magnitudes, both signs, exact zeros (whole zero rows too): ties everywhere."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randint(-3, 4, (rows, cols), generator=g).float() * 0.25
    weight[rows // 2] = 0.0
    return weight


@pytest.mark.parametrize("k", [0, 1, 300, 37 * 45 - 1, 37 * 45])
def test_fused_projection_equals_the_twin(k: int) -> None:
    weight = torch.randn(37, 45, generator=torch.Generator().manual_seed(k))
    assert_same_projection(weight, k, (2, 3))


@pytest.mark.parametrize(("k", "floors"), [(1, (4, 4)), (800, (4, 4)), (200, (0, 0))])
def test_fused_projection_breaks_ties_by_index(k: int, floors: tuple[int, int]) -> None:
    """With floors of 4 and k = 1 the floors alone decide the mask."""
    assert_same_projection(tied(37, 45, seed=k), k, floors)


@pytest.mark.parametrize(("shape", "dtype", "floors"), [
    ((5, 120), torch.float32, (4, 4)),  # floors wider than a column is long
    ((70, 5), torch.bfloat16, (4, 1)),  # rows shorter than their floor
    ((1, 33), torch.float32, (2, 0)),
])
def test_fused_projection_on_ragged_shapes(shape: tuple[int, int], dtype: torch.dtype,
                                           floors: tuple[int, int]) -> None:
    weight = torch.randn(*shape, generator=torch.Generator().manual_seed(3)).to(dtype)
    assert_same_projection(weight, shape[0] * shape[1] // 10, floors)


def test_too_small_a_capacity_drops_the_trailing_nonzeros_like_compress() -> None:
    weight = torch.randn(37, 45, generator=torch.Generator().manual_seed(4))
    assert_same_projection(weight, 300, (2, 2), capacity=200)


def test_project_refuses_what_it_cannot_project() -> None:
    with pytest.raises(ValueError, match="2-D weight"):
        project(torch.ones(5), 2, backend="triton")
    with pytest.raises(ValueError, match="k must be >= 0"):
        project(torch.ones(2, 2), -1, backend="triton")
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        project(torch.ones(2, 2), 1, backend="cuda")
