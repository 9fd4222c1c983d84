"""When to distrust a prediction: calibrated probabilities and a flag for unfamiliar photos.

* **Temperature scaling** (Guo et al. 2017): one scalar ``T`` divides the category logits before the
  softmax. It is fitted on the validation split at the end of training by minimizing the negative
  log-likelihood, so ``confidence`` means what it says (of photos predicted with 0.8, ~80 % right)
  while the predicted label, the argmax, never changes.
* **Unfamiliarity**: the energy score ``-T·logsumexp(logits/T)`` (Liu et al. 2020). Photos like the
  training ones make the head answer with large logits, hence a low energy; a photo unlike anything
  seen gets small logits and a high energy. It needs no stored data besides a threshold: the
  ``UNFAMILIAR_QUANTILE`` of the validation photos' scores, so about 5 % of photos like the
  training ones are flagged.

Both numbers live in the run's ``config.json``; a run from before them predicts with ``T = 1`` and
no flag.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

#: Equal-width confidence bins of the expected calibration error and the reliability diagram.
ECE_BINS = 15
#: Share of validation photos (like the training ones) that score below the threshold: 5 % are flagged.
UNFAMILIAR_QUANTILE = 0.95


#: Range of a fitted temperature. A validation split the model gets all right has no finite best
#: temperature (the NLL keeps falling as T → 0: the demo's 19 validation photos gave T = 0.048 and
#: probabilities of exactly 1.0), so the fit is bounded, and skipped when nothing is misclassified.
TEMPERATURE_RANGE = (0.5, 10.0)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimizing the NLL of ``softmax(logits / T)`` on ``labels`` (rows < 0 ignored).

    Optimized over ``log T`` with L-BFGS, so ``T`` stays positive, then clipped to
    :data:`TEMPERATURE_RANGE`; 1.0 when there is nothing to fit or no row is misclassified.
    """
    keep = labels >= 0
    if not keep.any() or logits.shape[1] < 2 or (logits[keep].argmax(1) == labels[keep]).all():
        return 1.0
    x, y = torch.as_tensor(logits[keep], dtype=torch.float64), torch.as_tensor(labels[keep], dtype=torch.long)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x / log_t.exp(), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(np.clip(log_t.detach().exp(), *TEMPERATURE_RANGE))


def probabilities(logits: np.ndarray | torch.Tensor, temperature: float = 1.0) -> np.ndarray:
    """Class probabilities of category logits, calibrated by ``temperature``."""
    return torch.softmax(torch.as_tensor(logits).float() / temperature, dim=1).cpu().numpy()


def unfamiliarity(logits: np.ndarray | torch.Tensor, temperature: float = 1.0) -> np.ndarray:
    """Energy score per row, ``-T·logsumexp(logits/T)``: higher means less like the training photos."""
    x = torch.as_tensor(logits).float()
    return (-temperature * torch.logsumexp(x / temperature, dim=1)).cpu().numpy()


def fit_threshold(scores: np.ndarray) -> float | None:
    """The score above which a photo is called unfamiliar (``UNFAMILIAR_QUANTILE`` of ``scores``)."""
    return float(np.quantile(scores, UNFAMILIAR_QUANTILE)) if len(scores) else None


def reliability_bins(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin of top-label confidence: (mean confidence, accuracy, count); empty bins give NaN."""
    confidence, correct = probs.max(1), probs.argmax(1) == labels
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)  # bin k holds (k/bins, (k+1)/bins]
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore"):
        mean_conf = np.bincount(which, confidence, bins) / count
        accuracy = np.bincount(which, correct, bins) / count
    return mean_conf, accuracy, count


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Top-label ECE: the count-weighted mean gap between confidence and accuracy over the bins."""
    mean_conf, accuracy, count = reliability_bins(probs, labels, bins)
    filled = count > 0
    return float(np.sum(count[filled] * np.abs(mean_conf[filled] - accuracy[filled])) / max(count.sum(), 1))


def calibrate(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float | None]:
    """``(temperature, unfamiliar threshold)`` fitted on a validation split's category logits and labels."""
    temperature = fit_temperature(logits, labels)
    return temperature, fit_threshold(unfamiliarity(logits, temperature))
