"""Shared helpers of the entropy_attention tests (a module of its own: several test folders
have a conftest.py, so importing from "conftest" would be ambiguous)."""

from __future__ import annotations

TINY = dict(n_layer=3, n_head=2, n_embd=32, context=32, batch_size=8, steps=12, lr=0.003, weight_decay=0.1,
            warmup_frac=0.05, grad_clip=1.0, eval_every=4, log_every=2, checkpoint_every=6, eval_sequences=16,
            entropy_sequences=4, curve_sequences=8, temperature_init=0.01, ereg_lambda=8e-5, ereg_tolerance=0.2,
            ereg_granularity="row", threshold_init=0.5, vocab_size=257)


