"""Top-1 accuracy, in percent: 100 * mean(prediction == reference)."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Top-1 accuracy in percent (0-100)."
_KWARGS = "predictions: predicted class ids; references: true class ids."


class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("int64"),
                                        "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        p, r = np.asarray(predictions), np.asarray(references)
        return {"accuracy": float(100.0 * np.mean(p == r)) if len(r) else float("nan")}
