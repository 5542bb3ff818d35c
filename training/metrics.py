"""Training metrics from scikit-learn: precision/recall/F1/AUC at a threshold, the
F1-optimal threshold, and the logistic function for OOF logits.  (The runtime's own
numpy evaluation, engine/evaluation.py, is tested against the same scikit-learn.)"""
from __future__ import annotations

import numpy as np


def binary_metrics(prob, y, threshold=0.5) -> dict:
    f1, prec, rec = prf(y, prob, threshold)
    auc = auc_score(y, np.asarray(prob, dtype=np.float64))
    return {"f1": round(f1, 4), "precision": round(prec, 4), "recall": round(rec, 4),
            "auc": round(auc, 4), "threshold": round(float(threshold), 3)}


def auc_score(y, p) -> float:
    """ROC AUC, NaN when the labels hold one class."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y).astype(int)
    return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")


def prf(y, p, t: float) -> tuple:
    """(F1, precision, recall) of ``p >= t``; undefined ratios are 0."""
    from sklearn.metrics import precision_recall_fscore_support

    prec, rec, f1, _ = precision_recall_fscore_support(np.asarray(y).astype(int), (np.asarray(p) >= t).astype(int),
                                                       average="binary", pos_label=1, zero_division=0)
    return float(f1), float(prec), float(rec)


def binary_f1(prob, y, t) -> float:
    return prf(y, prob, t)[0]


def best_threshold(prob, y, lo=0.05, hi=0.95, step=0.005) -> float:
    """F1-optimal threshold on a grid (ties -> closest to 0.5)."""
    grid = np.round(np.arange(lo, hi + step / 2, step), 4)
    f1 = np.array([binary_f1(prob, y, t) for t in grid])
    best = np.flatnonzero(f1 >= f1.max() - 1e-12)
    return float(grid[best[np.argmin(np.abs(grid[best] - 0.5))]])


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(x, np.float64), -60, 60)))
