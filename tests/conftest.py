"""Shared test set-up. The Triton interpreter must be chosen before any kernel is defined."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
