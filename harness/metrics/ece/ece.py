"""Expected calibration error with equal-width confidence bins (Guo et al., 2017).

    ECE = sum_b (|B_b| / n) * |acc(B_b) - conf(B_b)|

with conf = max softmax probability, bins (0, 1/M], ..., ((M-1)/M, 1]. In percent.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Expected calibration error (percent), equal-width bins over max-softmax confidence."
_KWARGS = "predictions: per-example logit vectors; references: true class ids; n_bins: number of bins (15)."


class ECE(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("float64")),
                                        "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, n_bins: int = 15):
        z = np.asarray(predictions, dtype=np.float64)
        y = np.asarray(references)
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        conf, pred = p.max(axis=1), p.argmax(axis=1)
        correct = (pred == y).astype(np.float64)
        bins = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)  # bin b holds (b/M, (b+1)/M]
        ece = 0.0
        for b in range(n_bins):
            sel = bins == b
            if sel.any():
                ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
        return {"ece": float(100.0 * ece)}
