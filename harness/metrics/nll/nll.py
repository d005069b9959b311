"""Mean negative log-likelihood (nats): -mean_i log softmax(logits_i)[y_i].

Computed from logits with the log-sum-exp trick, so large logits do not overflow.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Mean negative log-likelihood in nats, from logits."
_KWARGS = "predictions: per-example logit vectors; references: true class ids."


class NLL(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("float64")),
                                        "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        z = np.asarray(predictions, dtype=np.float64)
        y = np.asarray(references)
        m = z.max(axis=1, keepdims=True)
        logp = z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))
        return {"nll": float(-logp[np.arange(len(y)), y].mean())}
