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
