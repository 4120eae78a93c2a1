"""Shared test setup: one torch thread (this project's machines have 2 cores, shared with Ray workers)."""

import os

import torch

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
torch.set_num_threads(1)
