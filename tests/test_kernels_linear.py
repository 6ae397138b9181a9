"""sparse_linear, the CSR build and the sparse kernels against an fp64 dense masked reference.

The Triton cases run in the interpreter (``TRITON_INTERPRET=1``, set by conftest) on shapes
that span a few ragged blocks, so each launch stays at a few programs × a few loop steps.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from sparsecircuits.kernels import (
    choose_backend,
    compress,
    sparse_linear,
    triton_available,
)
from sparsecircuits.kernels.dispatch import (
    SPARSE_MARGIN,
    TABLES,
    forget_decisions,
    sparse_is_faster,
)
from sparsecircuits.kernels.spmm import sddmm_torch, spmm_torch

pytestmark = [
    pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta"),
    # triton 3.6's interpreter reads loop bounds through a 1-element array (fine below numpy 2.4)
    pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0:DeprecationWarning"),
]

needs_triton = pytest.mark.skipif(not triton_available(), reason="triton is not installed")
BACKENDS = ["torch", pytest.param("triton", marks=[needs_triton, pytest.mark.interpreter])]
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1e-2}

OUT, IN = 37, 45  # ragged against the 32-row / 64-token blocks
BATCH = (2, 35)  # 70 tokens


def make_weight(pattern: str, out: int = OUT, inp: int = IN, seed: int = 0) -> torch.Tensor:
    """A weight whose zeros follow ``pattern``."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(out, inp, generator=g)
    keep = {
        "density 0": torch.zeros(out, inp, dtype=torch.bool),
        "density 1": torch.ones(out, inp, dtype=torch.bool),
        "density 5%": torch.rand(out, inp, generator=g) < 0.05,
        "density 30%": torch.rand(out, inp, generator=g) < 0.3,
        "empty rows": (torch.rand(out, inp, generator=g) < 0.3) & (torch.arange(out) % 3 != 0)[
            :, None
        ],
        "one row": torch.arange(out)[:, None] == out // 2,
        "one column": torch.arange(inp)[None, :] == 0,
    }[pattern]
    return weight * keep


PATTERNS = [
    "density 0",
    "density 1",
    "density 5%",
    "density 30%",
    "empty rows",
    "one row",
    "one column",
]


def reference(x, weight, bias, dy, weight_grad):
    """fp64 dense F.linear on the same (dtype-rounded) values, with autograd gradients."""
    xr = x.detach().double().requires_grad_()
    wr = weight.detach().double().requires_grad_()
    br = bias.detach().double().requires_grad_()
    y = F.linear(xr, wr, br)
    y.backward(dy.double())
    dw = wr.grad if weight_grad == "dense" else wr.grad * (weight != 0)
    return y, xr.grad, dw, br.grad


def assert_matches(value, expected, dtype):
    tol = TOLERANCE[dtype]
    scale = float(expected.detach().abs().max()) if expected.numel() else 0.0
    torch.testing.assert_close(value.double(), expected, rtol=tol, atol=tol * scale)


def run_layer(backend, dtype, weight, weight_grad, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*BATCH, weight.shape[1], generator=g).to(dtype).requires_grad_()
    w = weight.to(dtype).requires_grad_()
    bias = torch.randn(weight.shape[0], generator=g).to(dtype).requires_grad_()
    dy = torch.randn(*BATCH, weight.shape[0], generator=g).to(dtype)
    y = sparse_linear(x, w, bias, backend=backend, weight_grad=weight_grad)
    y.backward(dy)
    got = (y, x.grad, w.grad, bias.grad)
    expected = reference(x, w, bias, dy, weight_grad)
    for value, target in zip(got, expected, strict=True):
        assert value.dtype == dtype
        assert value.shape == target.shape
        assert_matches(value, target, dtype)


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_and_gradients_match_dense(backend, dtype, pattern):
    run_layer(backend, dtype, make_weight(pattern), "dense")


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("backend", BACKENDS)
def test_random_shapes_and_densities(backend, seed):
    g = torch.Generator().manual_seed(100 + seed)
    tokens, inp, out = (int(n) for n in torch.randint(1, 80, (3,), generator=g))
    density = float(torch.rand((), generator=g))
    weight = torch.randn(out, inp, generator=g) * (torch.rand(out, inp, generator=g) < density)
    x = torch.randn(tokens, inp, generator=g, requires_grad=True)
    w = weight.clone().requires_grad_()
    dy = torch.randn(tokens, out, generator=g)
    y = sparse_linear(x, w, backend=backend)
    y.backward(dy)
    xr, wr = x.detach().double().requires_grad_(), weight.double().requires_grad_()
    yr = F.linear(xr, wr)
    yr.backward(dy.double())
    assert_matches(y, yr, torch.float32)
    assert_matches(x.grad, xr.grad, torch.float32)
    assert_matches(w.grad, wr.grad, torch.float32)


@pytest.mark.parametrize("pattern", ["density 5%", "density 30%", "empty rows", "one row"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("backend", ["dense", *BACKENDS])
def test_weight_gradient_sampled_at_mask(backend, dtype, pattern):
    run_layer(backend, dtype, make_weight(pattern), "mask")


@pytest.mark.parametrize("backend", ["auto", "dense", *BACKENDS])
def test_backends_agree_with_f_linear_without_bias(backend):
    weight = make_weight("density 30%")
    x = torch.randn(70, IN)
    torch.testing.assert_close(sparse_linear(x, weight, backend=backend), F.linear(x, weight))


def test_torch_backend_returns_row_major_output_like_f_linear():
    """The CPU path's output has F.linear's layout: a GELU after the layer ran 5-9x slower on
    a transposed one (kernels/spmm.py)."""
    x = torch.randn(70, IN)
    assert sparse_linear(x, make_weight("density 30%"), backend="torch").is_contiguous()


@pytest.mark.parametrize("backend", BACKENDS)
def test_consecutive_layers_on_a_transposed_view(backend):
    """The [T, N] outputs of sparse_linear (transposed views on Triton's default tile) feed
    the next layer, also through autograd."""
    first, second = make_weight("density 30%"), make_weight("density 30%", IN, OUT, seed=2)
    x = torch.randn(70, IN, requires_grad=True)
    y = sparse_linear(sparse_linear(x, first, backend=backend), second, backend=backend)
    y.sum().backward()
    xr = x.detach().double().requires_grad_()
    yr = F.linear(F.linear(xr, first.double()), second.double())
    yr.sum().backward()
    assert_matches(y, yr, torch.float32)
    assert_matches(x.grad, xr.grad, torch.float32)


def test_unknown_options_are_refused():
    x, weight = torch.randn(3, IN), make_weight("density 5%")
    with pytest.raises(ValueError, match="backend"):
        sparse_linear(x, weight, backend="cusparse")
    with pytest.raises(ValueError, match="weight_grad"):
        sparse_linear(x, weight, weight_grad="sparse")
    with pytest.raises(ValueError, match="features"):
        sparse_linear(torch.randn(3, IN + 1), weight, backend="torch")


# The compressed copy.


@pytest.mark.parametrize("pattern", PATTERNS)
def test_compress_holds_exactly_the_nonzeros(pattern):
    weight = make_weight(pattern)
    for matrix in (weight, weight.t()):
        csr = compress(matrix)
        assert csr.nnz == int((matrix != 0).sum())
        assert torch.equal(csr.to_dense(), matrix)
        lengths = csr.crow.diff()
        assert torch.equal(lengths, (matrix != 0).sum(dim=1).int())
        assert torch.equal(csr.row.long(), torch.repeat_interleave(lengths.long()))
        for r in range(matrix.shape[0]):  # ascending columns within each row
            assert bool((csr.col[csr.crow[r] : csr.crow[r + 1]].diff() > 0).all())


def test_compress_pads_a_static_capacity_and_never_overruns_it():
    weight = make_weight("density 5%")
    count = int((weight != 0).sum())
    padded = compress(weight, nnz=count + 7)
    assert padded.nnz == count + 7 and int(padded.crow[-1]) == count + 7
    assert torch.equal(padded.to_dense(), weight)
    assert bool((padded.val[count:] == 0).all())
    short = compress(weight, nnz=count - 3)
    assert short.nnz == count - 3 and int(short.crow.max()) <= count - 3
    assert compress(torch.zeros(0, 5)).crow.tolist() == [0]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_both_slot_finders_build_the_same_copy(pattern):
    weight = make_weight(pattern)
    count = int((weight != 0).sum())
    for matrix in (weight, weight.t()):
        for capacity in (None, count + 9, max(count - 3, 0)):
            by_nonzero = compress(matrix, capacity, finder="nonzero")
            by_search = compress(matrix, capacity, finder="search")
            for field in ("crow", "col", "row", "val"):
                assert torch.equal(getattr(by_nonzero, field), getattr(by_search, field)), field


@pytest.mark.parametrize("backend", BACKENDS)
def test_padded_copies_give_the_same_products(backend):
    weight = make_weight("empty rows")
    x, dy = torch.randn(70, IN), torch.randn(70, OUT)
    xt, dyt = x.t().contiguous(), dy.t().contiguous()
    count = int((weight != 0).sum())
    spmm, sddmm = kernels(backend)
    rows = compress(weight, nnz=count + 40)
    cols = compress(weight.t(), nnz=count + 40)
    dw = (dy.double().t() @ x.double())[rows.row.long(), rows.col.long()]
    real = rows.val != 0
    assert_matches(spmm(rows, xt), x.double() @ weight.double().t(), torch.float32)
    assert_matches(spmm(cols, dyt), dy.double() @ weight.double(), torch.float32)
    assert_matches(sddmm(rows, dyt, xt)[real], dw[real], torch.float32)


def kernels(backend):
    if backend == "torch":
        return spmm_torch, sddmm_torch
    from sparsecircuits.kernels.triton_spmm import sddmm_triton, spmm_triton

    return spmm_triton, sddmm_triton


# Guard bands: the interpreter does not catch out-of-bounds reads, so surround every input the
# kernels read with NaN (and out-of-range indices); any stray read poisons the result.


def guarded(tensor: torch.Tensor, pad: int = 50) -> torch.Tensor:
    """A copy of ``tensor`` that lives inside a larger buffer of poison values."""
    poison = float("nan") if tensor.is_floating_point() else 10**6
    if tensor.dim() == 1:
        buffer = torch.full((tensor.numel() + 2 * pad,), poison, dtype=tensor.dtype)
        buffer[pad : pad + tensor.numel()] = tensor
        return buffer[pad : pad + tensor.numel()]
    rows, cols = tensor.shape
    buffer = torch.full((rows + 2 * pad, cols + 2 * pad), poison, dtype=tensor.dtype)
    buffer[pad : pad + rows, pad : pad + cols] = tensor
    return buffer[pad : pad + rows, pad : pad + cols]


@needs_triton
@pytest.mark.interpreter
@pytest.mark.parametrize("pattern", ["density 30%", "one row", "density 0"])
def test_triton_kernels_stay_inside_their_buffers(pattern):
    spmm, sddmm = kernels("triton")
    weight = make_weight(pattern)
    x, dy = torch.randn(70, IN), torch.randn(70, OUT)
    csr = compress(weight)
    fenced = type(csr)(
        guarded(csr.crow), guarded(csr.col), guarded(csr.row), guarded(csr.val), csr.shape
    )
    xt, dyt = guarded(x.t().contiguous()), guarded(dy.t().contiguous())
    y = spmm(fenced, xt)
    values = sddmm(fenced, dyt, xt)
    assert_matches(y, x.double() @ weight.double().t(), torch.float32)
    dw = (dy.double().t() @ x.double())[csr.row.long(), csr.col.long()]
    assert_matches(values, dw, torch.float32)


# Dispatch and optional triton.


@pytest.mark.parametrize("key", sorted(TABLES))
def test_dispatch_follows_the_measured_table(key):
    _, timings = TABLES[key]
    for in_f, out_f, density, dense_ms, sparse_ms in timings:
        assert sparse_is_faster(timings, in_f, out_f, density) == (
            sparse_ms <= SPARSE_MARGIN * dense_ms
        )


def test_dispatch_reads_the_density_from_nnz_without_counting():
    _, timings = TABLES[("cpu", "float32")]
    in_f, out_f, density, _, _ = next(row for row in timings if row[4] < SPARSE_MARGIN * row[3])
    weight = torch.ones(out_f, in_f)  # no zeros: only nnz says how sparse it is
    assert choose_backend(weight, nnz=round(density * weight.numel())) == "torch"
    assert choose_backend(weight) == "dense"  # counted: density 1


def test_dispatch_is_dense_off_the_cpu():
    assert choose_backend(torch.empty(64, 64, device="meta")) == "dense"
    assert choose_backend(torch.zeros(0, 5)) == "dense"


# A table with a known answer: at 256x256 sparse wins at density <= 1 % and loses above; at
# 1024x1024 it wins everywhere measured. Off-grid queries take the nearest point in log space.
KNOWN = [(256, 256, 0.1, 1.0, 2.0), (256, 256, 0.01, 1.0, 0.5), (256, 256, 0.001, 1.0, 0.4),
         (1024, 1024, 0.1, 8.0, 6.0), (1024, 1024, 0.01, 8.0, 2.0)]


@pytest.mark.parametrize(("shape", "density", "expected"), [
    ((256, 256), 0.002, "torch"),    # between 1 % and 0.1 %: both sparse points
    ((256, 256), 0.05, "dense"),     # nearer 10 % (log distance) than 1 %
    ((256, 256), 0.0, "torch"),      # an all-zero weight counts as the lowest density
    ((300, 240), 0.008, "torch"),    # an off-grid shape near 256x256 at 1 %
    ((300, 240), 0.2, "dense"),
    ((900, 1100), 0.3, "torch"),     # nearest 1024x1024 at 10 %: 6.0 <= 0.9 * 8.0
    ((2048, 2048), 0.01, "torch"),
])
def test_dispatch_takes_the_nearest_measured_point_off_the_grid(monkeypatch, shape, density,
                                                                expected):
    monkeypatch.setitem(TABLES, ("cpu", "float32"), ("torch", KNOWN))
    forget_decisions()
    try:
        out_f, in_f = shape[1], shape[0]
        weight = torch.zeros(out_f, in_f)
        weight.view(-1)[: round(density * weight.numel())] = 1.0
        assert choose_backend(weight) == expected
    finally:
        forget_decisions()


def test_package_imports_without_triton():
    script = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch\n"
        "from sparsecircuits.kernels import sparse_linear, topk_mask, triton_available\n"
        "assert not triton_available()\n"
        "w, x = torch.eye(4), torch.ones(2, 4)\n"
        "assert torch.equal(sparse_linear(x, w, backend='torch'), x)\n"
        "for call in (lambda: sparse_linear(x, w, backend='triton'),\n"
        "             lambda: topk_mask(w, 2, backend='triton')):\n"
        "    try:\n"
        "        call()\n"
        "    except RuntimeError as error:\n"
        "        assert 'needs the triton package' in str(error)\n"
        "    else:\n"
        "        raise AssertionError('no error')\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


@needs_triton
@pytest.mark.interpreter
@pytest.mark.parametrize(
    "config",
    [(16, 32, 4, False, 1), (32, 64, 4, True, 0), (8, 16, 2, True, 3), (64, 16, 2, False, 2)],
    ids=["small tile", "feature-major out, all rows", "row groups", "ragged row group"],
)
def test_every_spmm_tile_computes_the_same_product(config):
    """The tiles bench.py sweeps on a GPU are all the same function."""
    from sparsecircuits.kernels.triton_spmm import SpmmConfig, spmm_triton

    weight = make_weight("empty rows")
    x = torch.randn(70, IN)
    y = spmm_triton(compress(weight), x.t().contiguous(), SpmmConfig(*config))
    assert y.shape == (70, OUT)
    assert_matches(y, x.double() @ weight.double().t(), torch.float32)


@needs_triton
@pytest.mark.interpreter
@pytest.mark.parametrize("shape", [(70, 45), (1, 130), (129, 1), (0, 5)])
def test_triton_transpose_is_the_feature_major_copy(shape):
    from sparsecircuits.kernels.triton_spmm import feature_major_triton

    x = torch.randn(*shape)
    assert torch.equal(feature_major_triton(x), x.t().contiguous())
    assert torch.equal(feature_major_triton(x[:, ::2]), x[:, ::2].t().contiguous())
    already = x.t().contiguous().t()
    assert feature_major_triton(already).data_ptr() == already.data_ptr()  # no copy
