"""The category head of a frozen encoder, fitted as a regularized linear probe.

Trained by the epoch loop (AdamW, small weight decay), the head of a frozen EfficientNet-Lite0
learns every cue that separates the training sources and carries little of the semantic prior
over to new ones: on posts-dev's leave-sources-out folds it scored 92.1 % on the held-out sources
with or without the prior. Fitted instead the way linear probes are evaluated (full-batch L-BFGS
on cross-entropy with an L2 penalty, as scikit-learn's ``LogisticRegression(C)``), the same head
generalizes the way the logistic experiments in :mod:`instacli.semantic` did. The head is then
frozen; the epoch loop trains the likes regressor only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from instacli.model import MultiTaskModel

#: Inverse L2 strength, in scikit-learn's convention (penalty ``‖w‖² / (2 C n)`` on the mean loss).
PROBE_C = 0.1
PROBE_MAX_ITER = 200


def category_head_parameters(net: MultiTaskModel) -> list[torch.nn.Parameter]:
    """Parameters of the category head: the classifier and, with a semantic prior, its branch."""
    modules = [net.classifier, net.prior_norm, net.prior_classifier]
    return [p for module in modules if module is not None for p in module.parameters()]


def fit_category_probe(net: MultiTaskModel, embeddings: torch.Tensor, labels: torch.Tensor) -> float:
    """Fit the category head on frozen ``embeddings`` of labelled rows, then freeze it; returns the final loss."""
    keep = labels >= 0
    x, y = embeddings[keep].float(), labels[keep]
    params = category_head_parameters(net)
    weights = [p for p in params if p.ndim > 1]  # the norms' scales stay free, as a scaler's would
    penalty = 1.0 / (2 * PROBE_C * max(len(y), 1))
    net.train(False)  # no dropout: the probe is a deterministic fit
    optimizer = torch.optim.LBFGS(params, lr=1.0, max_iter=PROBE_MAX_ITER, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(net.classify(x, x).float(), y) + penalty * sum((w.float() ** 2).sum() for w in weights)
        loss.backward()
        return loss

    with torch.enable_grad():
        loss = optimizer.step(closure)
    for p in params:
        p.requires_grad_(False)
    return float(loss.detach())
