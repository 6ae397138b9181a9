"""``python -m sparsecircuits`` (and ``torchrun ... -m sparsecircuits train ...``): the CLI."""

from sparsecircuits.cli import main

main()
