"""Probes on frozen embeddings and latent-geometry metrics (scikit-learn / numpy only).

Features are standardised with the training statistics before every probe (mu and the
informative embedding mu + decoder states live on different scales).
Images: kNN-5 with cosine and with Euclidean distance, and logistic regression, fit on the train
split and scored on the test split. Molecules: ridge and RBF-SVR, 5-fold cross-validated RMSE
with random folds and with scaffold-grouped folds, per target; ``nrmse`` = RMSE / std(target).
"""

from __future__ import annotations

import numpy as np

#: Seed of the cross-validation folds (fixed: the same folds for every method and seed).
FOLD_SEED = 0


def _standardise(train: np.ndarray, *others: np.ndarray):
    m, s = train.mean(0), train.std(0)
    s = np.where(s > 1e-12, s, 1.0)
    return [(a - m) / s for a in (train, *others)]


def _one_thread():
    """BLAS/OpenMP pools at one thread: the DAG gives each run one core (and results do not depend
    on how many cores the machine has)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def image_probes(f_train: np.ndarray, y_train: np.ndarray, f_test: np.ndarray, y_test: np.ndarray,
                 k: int = 5, logreg_max_iter: int = 300) -> dict[str, float]:
    with _one_thread():
        return _image_probes(f_train, y_train, f_test, y_test, k, logreg_max_iter)


def _image_probes(f_train, y_train, f_test, y_test, k, logreg_max_iter) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    a, b = _standardise(f_train.astype(np.float64), f_test.astype(np.float64))
    out = {}
    for name, metric in (("knn_cos_acc", "cosine"), ("knn_euc_acc", "euclidean")):
        knn = KNeighborsClassifier(n_neighbors=k, metric=metric, algorithm="brute").fit(a, y_train)
        out[name] = float((knn.predict(b) == y_test).mean())
    lr = LogisticRegression(max_iter=logreg_max_iter, C=1.0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lr.fit(a, y_train)
    out["logreg_acc"] = float((lr.predict(b) == y_test).mean())
    out["probe_score"] = float(np.mean([out["knn_cos_acc"], out["knn_euc_acc"], out["logreg_acc"]]))
    return out


def folds(n: int, split: str, groups: np.ndarray | None = None, n_folds: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """Random K-fold (shuffled, fixed seed) or scaffold K-fold (GroupKFold over scaffolds)."""
    from sklearn.model_selection import GroupKFold, KFold

    idx = np.arange(n)
    if split == "random":
        return list(KFold(n_folds, shuffle=True, random_state=FOLD_SEED).split(idx))
    if split == "scaffold":
        return list(GroupKFold(n_folds).split(idx, groups=groups))
    raise ValueError(f"unknown split {split!r}")


def cv_rmse(features: np.ndarray, y: np.ndarray, probe: str, fold_list) -> float:
    """Root of the mean squared error over all held-out predictions of the folds."""
    from sklearn.linear_model import Ridge
    from sklearn.svm import SVR

    pred = np.zeros_like(y, dtype=np.float64)
    for tr, te in fold_list:
        a, b = _standardise(features[tr].astype(np.float64), features[te].astype(np.float64))
        ym, ys = y[tr].mean(), y[tr].std() or 1.0
        model = Ridge(alpha=1.0) if probe == "ridge" else SVR(kernel="rbf", C=1.0, gamma="scale")
        model.fit(a, (y[tr] - ym) / ys)
        pred[te] = model.predict(b) * ys + ym
    return float(np.sqrt(np.mean((pred - y) ** 2)))


def molecule_probes(features: np.ndarray, target: np.ndarray, source: np.ndarray, scaffold: np.ndarray,
                    sources: tuple[str, ...], splits=("random", "scaffold"), probes=("ridge", "svr")) -> dict[str, float]:
    with _one_thread():
        return _molecule_probes(features, target, source, scaffold, sources, splits, probes)


def _molecule_probes(features, target, source, scaffold, sources, splits, probes) -> dict[str, float]:
    out, nrmse = {}, []
    for src in sources:
        sel = np.flatnonzero(source == src)
        y, f = target[sel], features[sel]
        for split in splits:
            fl = folds(len(sel), split, scaffold[sel])
            for probe in probes:
                r = cv_rmse(f, y, probe, fl)
                out[f"rmse_{src}_{split}_{probe}"] = r
                nrmse.append(r / float(y.std()))
    out["probe_nrmse"] = float(np.mean(nrmse))
    out["probe_score"] = 1.0 - out["probe_nrmse"]
    return out


def uniformity(mu: np.ndarray, t: float = 2.0, max_n: int = 1000) -> tuple[float, float]:
    """(-log mean_{i<j} exp(-t |u_i - u_j|^2), mean_{i != j} cos(u_i, u_j)) of the normalised codes;
    the first is higher, the second lower, for codes spread more uniformly over the sphere."""
    u = mu[:max_n].astype(np.float64)
    u = u / np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-12)
    cos = u @ u.T
    iu = np.triu_indices(len(u), 1)
    sq = np.maximum(2.0 - 2.0 * cos[iu], 0.0)
    a = -t * sq
    lme = a.max() + np.log(np.mean(np.exp(a - a.max())))
    return float(-lme), float(cos[iu].mean())
