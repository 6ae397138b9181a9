"""The model's hooks and options, checked against direct computation."""

import pytest
import torch
import torch.nn.functional as F

from sparsecircuits.config import ModelConfig
from sparsecircuits.model import SparseGPT

CFG = ModelConfig(d_model=32, n_layers=2, n_heads=2, d_head=8, d_mlp=48, n_ctx=16)


def tokens(batch=3, pos=10, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, CFG.vocab_size, (batch, pos), generator=generator)


def test_cache_holds_every_channel_site_with_plain_shapes():
    model = SparseGPT(CFG)
    logits, cache = model.run_with_cache(tokens())
    assert logits.shape == (3, 10, CFG.vocab_size)
    assert set(cache) == set(model.hook_names())
    assert cache["blocks.1.attn.hook_q"].shape == (3, 10, 16)
    assert cache["blocks.0.mlp.hook_post"].shape == (3, 10, 48)
    assert cache["blocks.0.attn.hook_pattern"].shape == (3, 2, 10, 10)
    assert cache["hook_pos_embed"].shape == (3, 10, 32)
    # The residual bookkeeping adds up: resid_post = resid_mid + mlp_out.
    torch.testing.assert_close(
        cache["blocks.0.hook_resid_post"],
        cache["blocks.0.hook_resid_mid"] + cache["blocks.0.hook_mlp_out"],
    )
    assert model.hook_names()[:3] == ["hook_embed", "hook_pos_embed", "blocks.0.hook_resid_pre"]


def test_attention_matches_a_hand_computation():
    """The fused path (no pattern hook) equals softmax(q kᵀ/√d + causal) v by hand."""
    model = SparseGPT(CFG)
    _, cache = model.run_with_cache(tokens(), names_filter=lambda n: n.startswith("blocks.0.attn"))
    q, k, v = (cache[f"blocks.0.attn.hook_{x}"].view(3, 10, 2, 8).transpose(1, 2) for x in "qkv")
    scores = q @ k.transpose(-1, -2) / 8**0.5
    scores = scores.masked_fill(~torch.ones(10, 10, dtype=torch.bool).tril(), float("-inf"))
    z = (scores.softmax(-1) @ v).transpose(1, 2).reshape(3, 10, 16)
    torch.testing.assert_close(cache["blocks.0.attn.hook_z"], z, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cache["blocks.0.attn.hook_pattern"], scores.softmax(-1))
    plain = model(tokens())
    torch.testing.assert_close(model.run_with_cache(tokens())[0], plain, atol=1e-5, rtol=1e-5)


def test_hooks_replace_and_are_removed():
    model = SparseGPT(CFG)
    base = model(tokens())

    def zero(x, hook):
        return torch.zeros_like(x)

    patched = model.run_with_hooks(tokens(), fwd_hooks=[("blocks.1.hook_mlp_out", zero)])
    assert not torch.allclose(base, patched)
    # Zeroing the last MLP's write equals computing the unembedding of resid_mid by hand.
    _, cache = model.run_with_cache(tokens(), names_filter="blocks.1.hook_resid_mid")
    resid = cache["blocks.1.hook_resid_mid"]
    by_hand = F.linear(F.rms_norm(resid, (32,), model.ln_final.w, 1e-6),
                       model.unembed.W, model.unembed.b)
    torch.testing.assert_close(patched, by_hand, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model(tokens()), base)
    assert all(not point.fns for point in model.hook_points.values())
    with pytest.raises(KeyError, match=r"no hook point 'blocks.0.hook_nope'"):
        model.run_with_hooks(tokens(), [(["blocks.0.hook_mlp_out", "blocks.0.hook_nope"], zero)])
    assert all(not point.fns for point in model.hook_points.values())


def test_activation_sparsity_keeps_k_per_token():
    cfg = ModelConfig(**{**CFG.__dict__, "act_sparsity": 0.25,
                         "act_sparsity_sites": ["mlp.hook_post", "attn.hook_q"]})
    model = SparseGPT(cfg)
    _, cache = model.run_with_cache(tokens())
    assert ((cache["blocks.0.mlp.hook_post"] != 0).sum(-1) == 12).all()
    assert ((cache["blocks.1.attn.hook_q"] != 0).sum(-1) == 4).all()
    assert ((cache["blocks.0.attn.hook_k"] != 0).sum(-1) > 4).all()


def test_attention_sink_absorbs_mass():
    cfg = ModelConfig(**{**CFG.__dict__, "attn_sink": True})
    model = SparseGPT(cfg)
    with torch.no_grad():
        for block in model.blocks:
            block.attn.sink.fill_(30.0)
    _, cache = model.run_with_cache(tokens(), names_filter=lambda n: "pattern" in n)
    # A huge sink logit takes nearly all the attention: rows sum to ~0.
    assert cache["blocks.0.attn.hook_pattern"].sum(-1).max() < 1e-6


def test_sparse_parameters_and_options():
    model = SparseGPT(CFG)
    kinds = model.sparse_parameters()
    assert kinds["blocks.0.attn.q.W"] == "matrix"
    assert kinds["W_E"] == kinds["unembed.W"] == kinds["blocks.0.mlp.fc_in.b"] == "embed"
    assert "blocks.0.ln1.w" not in kinds
    assert model.bigram is None
    with_bigram = SparseGPT(ModelConfig(**{**CFG.__dict__, "bigram": True}))
    assert "bigram" not in with_bigram.sparse_parameters()


def test_init_depends_on_seed_only():
    torch.manual_seed(123)
    a = SparseGPT(CFG, seed=1)
    torch.manual_seed(456)
    b = SparseGPT(CFG, seed=1)
    c = SparseGPT(CFG, seed=2)
    torch.testing.assert_close(a.W_E, b.W_E)
    assert not torch.equal(a.W_E, c.W_E)


@pytest.mark.parametrize("options", [{}, {"attn_sink": True, "bigram": True}, {"n_layers": 1}])
def test_last_only_forward_equals_the_full_forward_at_the_last_position(options):
    cfg = ModelConfig(**{**CFG.__dict__, **options})
    model = SparseGPT(cfg, seed=3)
    if cfg.attn_sink:
        torch.nn.init.normal_(model.blocks[-1].attn.sink)
    x = tokens()
    full = model(x)
    last = model(x, last_only=True)
    assert last.shape == (3, 1, cfg.vocab_size)
    torch.testing.assert_close(last[:, 0], full[:, -1], atol=1e-5, rtol=1e-5)
    # With a pattern hook (the explicit path) and a hook on a final-block site.
    final = f"blocks.{cfg.n_layers - 1}"
    double = [(f"{final}.mlp.hook_post", lambda a, hook: 2 * a),
              (f"{final}.attn.hook_pattern", lambda a, hook: a)]
    torch.testing.assert_close(model.run_with_hooks(x, double, last_only=True)[:, 0],
                               model.run_with_hooks(x, double)[:, -1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("last_only", [False, True])
def test_a_forward_started_from_a_cached_residual_stream_ends_the_same(last_only):
    model = SparseGPT(CFG, seed=4)
    x = tokens()
    full, cache = model.run_with_cache(x)
    _, cache_last = model.run_with_cache(x, last_only=True)  # the final block at one position
    seen: list[str] = []
    for name in model.residual_starts():
        resid = (cache_last if last_only else cache)[name]
        seen.clear()
        out = model.run_with_hooks(
            x, [(lambda n: "resid" in n, lambda a, hook: seen.append(hook.name))],
            start=(name, resid), last_only=last_only,
        )
        order = model.hook_names(lambda n: "resid" in n)
        assert seen == order[order.index(name) + 1:], name  # only the hooks after the start
        expected = full[:, -1:] if last_only else full
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="cannot start"):
        model(x, start=("blocks.0.mlp.hook_post", full))


@pytest.mark.parametrize("last_only", [False, True])
@pytest.mark.parametrize("per_position", [False, True])
@pytest.mark.parametrize("computed", [0, 5, 48])
def test_a_restricted_mlp_equals_holding_its_other_neurons_at_hook_post(
    last_only: bool, per_position: bool, computed: int
) -> None:
    """Computing some neurons and folding the others' fixed values into the output bias is
    the same function as replacing those neurons at ``mlp.hook_post``; the hooks see only the
    computed neurons, in the order given."""
    from sparsecircuits.model import restricted_mlps

    model = SparseGPT(CFG, seed=3)
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for block in model.blocks:  # nonzero biases, so that they count
            block.mlp.fc_in.b.normal_(generator=generator)
            block.mlp.fc_out.b.normal_(generator=generator)
    neurons = torch.randperm(CFG.d_mlp, generator=generator)[:computed]
    shape = (10, CFG.d_mlp) if per_position else (CFG.d_mlp,)
    values = {i: torch.randn(shape, generator=generator) for i in range(CFG.n_layers)}
    held = torch.ones(CFG.d_mlp, dtype=torch.bool)
    held[neurons] = False
    seen: dict[str, torch.Tensor] = {}

    def hold(x: torch.Tensor, hook) -> torch.Tensor:
        value = values[int(hook.name.split(".")[1])]
        value = value[-x.shape[1]:] if per_position else value
        return torch.where(held, value.expand_as(x), x)

    def record(x: torch.Tensor, hook) -> None:
        seen[hook.name] = x

    expected = model.run_with_hooks(tokens(), [(lambda n: n.endswith("mlp.hook_post"), hold)],
                                    last_only=last_only)
    with restricted_mlps(model, {i: (neurons, values[i]) for i in values}):
        got = model.run_with_hooks(tokens(), [(lambda n: n.endswith("mlp.hook_post"), record)],
                                   last_only=last_only)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    _, cache = model.run_with_cache(tokens(), names_filter="blocks.0.mlp.hook_post")
    torch.testing.assert_close(seen["blocks.0.mlp.hook_post"],
                               cache["blocks.0.mlp.hook_post"][..., neurons])
    assert all(block.mlp.restricted is None for block in model.blocks)  # restored on exit
    sparse = SparseGPT(ModelConfig(**{**CFG.__dict__, "act_sparsity": 0.25}))
    with (pytest.raises(ValueError, match=r"blocks\.0\.mlp is activation-sparse"),
          restricted_mlps(sparse, {0: (neurons, values[0])})):
        pass


def test_strings_tokens_and_short_cache_keys():
    model = SparseGPT(CFG)
    tokens = model.to_tokens(["x = 1", "def f():"])
    assert tokens.shape == (2, model.cfg.n_ctx) and (tokens[0, :-5] == 0).all()
    assert model.to_str_tokens(tokens[0]) == list("x = 1")
    assert model.to_str_tokens("ab") == ["a", "b"]
    torch.testing.assert_close(model("x = 1"), model(tokens[0]))  # 1-D ids: one row
    with pytest.raises(ValueError, match="more than the context"):
        model.to_tokens("x" * (model.cfg.n_ctx + 1))
    _, cache = model.run_with_cache("x = 1", names_filter="mlp.hook_post")
    assert list(cache) == [f"blocks.{i}.mlp.hook_post" for i in range(model.cfg.n_layers)]
    assert cache["post", 0] is cache["blocks.0.mlp.hook_post"]
    with pytest.raises(KeyError, match=r"did you mean blocks\.0\.mlp\.hook_post"):
        cache["mlp.hook_post"]
    with pytest.raises(KeyError, match=r"no hook point matches 'mlp\.hook_postt'"):
        model.hook_names("mlp.hook_postt")
    assert model.hook_names("hook_q") == [f"blocks.{i}.attn.hook_q"
                                          for i in range(model.cfg.n_layers)]
