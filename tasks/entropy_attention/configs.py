"""Table 1 of the paper (plus the FFN weight/spectral-normalisation rows of Tables 5-6): each
method is a set of architecture switches of model.GPTConfig, the same at every scale.

Hyperparameters of the training recipe (lr, steps, lambda, gamma, ...) live in task.yaml; a
method's task.yaml values override these switches (e.g. a temperature-reading variant).
"""

from __future__ import annotations

NO_LN = {"layernorm": False}
SOFTMAX_ONLY_FUSED = {**NO_LN, "ffn": "fused"}

ARCHITECTURES: dict[str, dict] = {
    "sm_ln_g": {"layernorm": True, "ffn": "gelu"},            # baseline GPT-2
    "sm_ln_r": {"layernorm": True, "ffn": "relu"},
    "sm_ln": {"layernorm": True, "ffn": "identity"},
    "sm_g": {**NO_LN, "ffn": "gelu"},
    "sm_r": {**NO_LN, "ffn": "relu"},
    "sm": {**NO_LN, "ffn": "identity"},                         # Softmax-only, unstabilised
    # Stabilisers of the Softmax-only model, all on the fused identity FFN so that only the
    # stabiliser differs between them (README: a choice; the paper does not say for WN/SN).
    "sm_wn_ffn": {**SOFTMAX_ONLY_FUSED, "ffn_norm": "weight"},
    "sm_sn_ffn": {**SOFTMAX_ONLY_FUSED, "ffn_norm": "spectral"},
    "sm_scfuffn": {**SOFTMAX_ONLY_FUSED, "ffn_scaling": True},
    "sm_t_scfuffn": {**SOFTMAX_ONLY_FUSED, "ffn_scaling": True, "temperature": "divide"},
    "ereg_sm_t_scfuffn": {**SOFTMAX_ONLY_FUSED, "ffn_scaling": True, "temperature": "divide", "ereg": True},
    # The other reading of Appendix A's temperature, softmax(t q.k / sqrt(d)): run because the
    # literal one diverges under the regulariser (card §2: run both if the literal one fails).
    "sm_tmul_scfuffn": {**SOFTMAX_ONLY_FUSED, "ffn_scaling": True, "temperature": "multiply"},
    "ereg_sm_tmul_scfuffn": {**SOFTMAX_ONLY_FUSED, "ffn_scaling": True, "temperature": "multiply", "ereg": True},
}


def resolve(method: str, hp: dict) -> dict:
    """The method's architecture switches under its task.yaml hyperparameters."""
    if method not in ARCHITECTURES:
        raise ValueError(f"entropy_attention has no architecture for method {method!r} "
                         f"(known: {', '.join(ARCHITECTURES)})")
    return {**ARCHITECTURES[method], **hp}
