"""The shared layered layout: every node placed once, residual channels aligned, no overlap."""

import itertools

from sparsecircuits.circuits.graph import site_widths
from sparsecircuits.circuits.layout import bands, layout, model_config
from sparsecircuits.config import ModelConfig


def test_every_node_has_one_distinct_position_in_forward_order():
    cfg = ModelConfig(d_model=16, n_layers=2, n_heads=2, d_head=4, d_mlp=32, vocab_size=11,
                      n_ctx=8)
    pos = layout(cfg)
    assert len(pos) == sum(site_widths(cfg).values())
    assert len(set(pos.values())) == len(pos)
    assert all(0.0 <= x <= 1.0 for x, _ in pos.values())
    ys = [pos[f"{site}:0"][1] for site in site_widths(cfg)]
    assert ys == sorted(ys), "bands follow forward order"
    assert pos["tokens:0"][1] == 0 and pos["logits:0"][1] == max(ys)


def test_residual_channels_share_x_and_sites_in_a_band_do_not_overlap():
    cfg = ModelConfig(d_model=16, n_layers=2, n_heads=2, d_head=4, d_mlp=32)
    pos = layout(cfg)
    residual = ["blocks.0.hook_resid_pre", "blocks.1.ln1.hook_normalized",
                "blocks.0.hook_mlp_out", "ln_final.hook_normalized"]
    for d in range(cfg.d_model):
        assert len({pos[f"{site}:{d}"][0] for site in residual}) == 1
    for band in bands(cfg):
        for (_, a1), (b0, _) in itertools.pairwise(band.spans):
            assert a1 < b0
    qkv = next(b for b in bands(cfg) if len(b.sites) == 3)
    assert qkv.label == "blocks.0.attn.hook_q | hook_k | hook_v"


def test_layout_of_a_graph_reads_the_model_shape_it_records():
    import networkx as nx

    cfg = ModelConfig(d_model=16, n_layers=1, n_heads=2, d_head=4, d_mlp=32, vocab_size=11,
                      n_ctx=8)
    graph = nx.DiGraph(n_layers=1, d_model=16, n_heads=2, d_head=4, d_mlp=32, vocab_size=11,
                       n_ctx=8)
    assert model_config(graph) == cfg
    assert layout(graph) == layout(cfg)
