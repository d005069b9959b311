"""entropy_attention: Entropy-Guided Attention for Private LLMs (Jha & Reagen, PPAI @ AAAI 2025).

GPT-2 variants with fewer nonlinearities (Table 1: no LayerNorm, ReLU/identity FFNs, the
Softmax-only model with FFN weight/spectral normalisation or learnable scaling, a learnable
attention temperature and the entropy regulariser of Algorithm 1), trained on a code corpus, with
per-head attention entropy as the diagnostic. See README.md for the mapping to the paper.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from harness.api import Benchmark, Metric, Method, RunContext, RunResult, Task


class EntropyAttentionTask(Task):
    root = Path(__file__).parent

    def datasets(self):
        from .data import BUILDERS

        return dict(BUILDERS)

    def run(self, method: Method, benchmark: Benchmark, config: Mapping[str, Any], ctx: RunContext) -> RunResult:
        from . import configs
        from harness.config import ConfigError

        from .data import VOCAB_SIZE, load_corpus, tokenizer_vocab
        from .train import train

        # A benchmark's settings (context length, depth) override the recipe: Tables 7-8.
        settings = {k: v for k, v in benchmark.settings.items()}
        hp = configs.resolve(method.name, {**dict(config), **settings})
        tokenizer = str(hp.get("tokenizer", "bytes"))
        corpus = load_corpus(benchmark.dataset, hp.get("max_train_tokens"), hp.get("max_eval_tokens"), tokenizer)
        vocab = VOCAB_SIZE if tokenizer == "bytes" else int(hp["vocab_size"])
        needed = tokenizer_vocab(tokenizer)
        if needed > vocab:
            raise ConfigError(f"tokenizer {tokenizer!r} has {needed} ids but vocab_size is {vocab}: raise vocab_size "
                              "in task.yaml (GPT-2's 50,257 is padded to 50,304)")
        out = train(corpus, {**hp, "vocab_size": vocab}, ctx, device=ctx.device)
        out["info"]["tokenizer"] = {"name": tokenizer, "ids": needed}
        higher = self.config.higher_is_better
        metrics = tuple(Metric(name, float(value), higher(name)) for name, value in out["metrics"].items())
        diverged = out["info"]["diverged_step"] is not None
        return RunResult(metrics=metrics, status="diverged" if diverged else "ok", info=out["info"])

    def estimate(self, method: Method, benchmark: Benchmark, config: Mapping[str, Any], scale: str):
        from .estimate import estimate_run

        return estimate_run(method, benchmark, config)

    # -- the task's figures (analysis.py; claim functions are analysis.claim_*) -----------------
    def figures(self, runs, scale: str) -> list[tuple[str, str]]:
        from .analysis import figures

        return figures(self, runs, scale)


task = EntropyAttentionTask()
