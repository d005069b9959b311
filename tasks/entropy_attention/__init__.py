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
        from .data import VOCAB_SIZE, load_corpus
        from .train import train

        # A benchmark's settings (context length, depth) override the recipe: Tables 7-8.
        settings = {k: v for k, v in benchmark.settings.items()}
        hp = configs.resolve(method.name, {**dict(config), **settings})
        corpus = load_corpus(benchmark.dataset, hp.get("max_train_tokens"), hp.get("max_eval_tokens"))
        out = train(corpus, {**hp, "vocab_size": VOCAB_SIZE}, ctx, device=ctx.device)
        higher = self.config.higher_is_better
        metrics = tuple(Metric(name, float(value), higher(name)) for name, value in out["metrics"].items())
        diverged = out["info"]["diverged_step"] is not None
        return RunResult(metrics=metrics, status="diverged" if diverged else "ok", info=out["info"])

    # -- claims and the task's figures (analysis.py) -----------------------------------------
    # Paired comparisons: analysis.COMPARISONS says which metric, arms and direction.
    def claim_gelu_overload(self, frame):
        return _compare(frame, "claim_gelu_overload")

    def claim_gelu_worse_than_relu(self, frame):
        return _compare(frame, "claim_gelu_worse_than_relu")

    def claim_scaled_ffn_beats_wn(self, frame):
        return _compare(frame, "claim_scaled_ffn_beats_wn")

    def claim_scaled_ffn_beats_sn(self, frame):
        return _compare(frame, "claim_scaled_ffn_beats_sn")

    def claim_ereg_lowers_loss(self, frame):
        return _compare(frame, "claim_ereg_lowers_loss")

    def claim_ereg_less_overload(self, frame):
        return _compare(frame, "claim_ereg_less_overload")

    def claim_ereg_tmul_lowers_loss(self, frame):
        return _compare(frame, "claim_ereg_tmul_lowers_loss")

    def claim_sm_collapse(self, frame):
        from .analysis import claim_sm_collapse

        return claim_sm_collapse(self, frame)

    def claim_ppl_order(self, frame):
        from .analysis import claim_ppl_order

        return claim_ppl_order(self, frame)

    def claim_thresholds_nonuniform(self, frame):
        from .analysis import claim_thresholds_nonuniform

        return claim_thresholds_nonuniform(self, frame)

    def figures(self, runs, scale: str) -> list[tuple[str, str]]:
        from .analysis import figures

        return figures(self, runs, scale)


def _compare(frame, name: str):
    from .analysis import compare

    return compare(frame, name)


task = EntropyAttentionTask()
