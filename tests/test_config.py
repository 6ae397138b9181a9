"""Config files, presets and overrides: every bad value is refused with its field's name."""

import json

import pytest

from sparsecircuits.config import PRESETS, ConfigError, load_config


@pytest.mark.parametrize("preset", list(PRESETS))
def test_presets_load(preset):
    config = load_config(preset)
    assert config.schedule.sources


def test_overrides_apply_with_types():
    config = load_config("tiny", ["model.d_model=96", "sparsity.matrix_density=0.1",
                                  "schedule.sources=[\"quote\"]", "model.attn_sink=true"])
    assert config.model.d_model == 96
    assert config.sparsity.matrix_density == 0.1
    assert config.schedule.sources == ["quote"]
    assert config.model.attn_sink is True


def test_file_with_preset_base(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('preset = "tiny"\n[model]\nn_layers = 3\n[schedule]\ncycles = 2\n')
    config = load_config(str(path))
    assert config.model.n_layers == 3
    assert config.schedule.cycles == 2
    assert config.model.d_model == 128  # from the preset


def test_json_file(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"schedule": {"sources": ["quote"]}, "run": {"seed": 3}}))
    assert load_config(str(path)).run.seed == 3


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("model.d_modle=3", "model.d_modle: unknown key (did you mean model.d_model?)"),
        ("model.d_model=\"wide\"", "model.d_model: expected int"),
        ("model.d_model=1.5", "model.d_model: expected int"),
        ("model.attn_sink=1", "model.attn_sink: expected true or false"),
        ("sparsity.matrix_density=1.5", "sparsity.matrix_density: must lie in (0, 1]"),
        ("sparsity.embed_density=0", "sparsity.embed_density: must lie in (0, 1]"),
        ("sparsity.anneal_shape=\"cubic\"", "sparsity.anneal_shape"),
        ("optimizer.decay=\"cosine\"", "optimizer.decay"),
        ("model.act_sparsity_sites=[\"mlp.hook_nope\"]", "model.act_sparsity_sites[0]"),
        ("run.device=\"gpu\"", "run.device: must be 'cpu', 'cuda' or 'cuda:N'"),
        ("modle.d_model=3", "modle: unknown section"),
        ("d_model=3", "expected section.field=value"),
    ],
)
def test_bad_values_name_their_field(override, field):
    with pytest.raises(ConfigError) as err:
        load_config("tiny", [override])
    assert field in str(err.value)


def test_bad_files_are_named(tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text("[model\n")
    with pytest.raises(ConfigError, match=r"broken.toml: not valid TOML"):
        load_config(str(broken))
    with pytest.raises(ConfigError, match=r"missing.json: cannot read config"):
        load_config(str(tmp_path / "missing.json"))
    with pytest.raises(ConfigError, match=r"neither a preset"):
        load_config("huge")
    other = tmp_path / "p.toml"
    other.write_text('preset = "huge"\n')
    with pytest.raises(ConfigError, match=r"preset: unknown preset 'huge'"):
        load_config(str(other))


def test_gao2025_preset_follows_the_recipe():
    from sparsecircuits.config import ACT_SPARSITY_SITES
    from sparsecircuits.model import SparseGPT
    from sparsecircuits.schedules import build_schedule
    from sparsecircuits.sparsity import Sparsifier

    config = load_config("gao2025")
    o, s, m = config.optimizer, config.sparsity, config.model
    assert (o.lr, o.beta1, o.beta2, o.eps, o.weight_decay) == (1.28e-2, 0.9, 0.95, 0.1, 0.1)
    assert (o.warmup, o.decay, o.sharkfin, o.normalize_grad) == (0.01, "linear", True, True)
    assert (s.anneal_start, s.anneal_end, s.anneal_shape, s.min_per_neuron) == (
        0.01, 0.5, "linear", 4)
    assert m.act_sparsity == 0.25 and sorted(m.act_sparsity_sites) == sorted(ACT_SPARSITY_SITES)
    assert m.bigram and not m.attn_sink and m.d_head == 16
    # Every sparse tensor, embeddings and biases included, ends at one density fraction.
    total = build_schedule(config.schedule).total_steps
    sparsifier = Sparsifier(SparseGPT(m), s, total)
    assert set(sparsifier.targets.values()) == {1 / 16}
    # The budget holds the floor of 4 per row and per column of every matrix.
    for name, param in sparsifier.params.items():
        if param.dim() == 2 and name not in ("W_E", "W_pos", "unembed.W"):
            rows, cols = param.shape
            assert s.min_per_neuron * max(rows, cols) <= sparsifier.budget(name, total - 1), name
    # The anneal is over when the cycles begin: the warm-up covers the first half.
    assert s.anneal_end * total <= config.schedule.warmup_steps
