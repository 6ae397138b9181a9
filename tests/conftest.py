"""Shared test set-up. The Triton interpreter must be chosen before any kernel is defined."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest

MICRO = {
    "model": {"d_model": 32, "n_layers": 1, "n_heads": 2, "d_head": 16, "d_mlp": 64},
    "schedule": {"sources": ["quote", "closer"], "steps_per_block": 6, "cycles": 2},
    "data": {"source_rows": 8, "lm_rows": 4, "eval_examples": 16, "eval_windows": 4},
    "sparsity": {"matrix_density": 0.25, "embed_density": 0.5, "anneal_end": 0.5},
    "run": {"threads": 1, "log_every": 1},
}
"""A model and schedule small enough to train in about a second."""


@pytest.fixture
def micro_config():
    """Build the micro config, overlaid with ``--set``-style overrides."""
    from sparsecircuits.config import config_from_dict, parse_override, validate

    def make(*overrides: str):
        config = config_from_dict(MICRO)
        for text in overrides:
            config = config_from_dict(parse_override(text), config)
        validate(config)
        return config

    return make
