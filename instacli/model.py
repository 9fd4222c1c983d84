"""The multimodal, multi-task network and how a trained one is saved and loaded.

Late fusion: the image encoder turns pixels into an embedding; a category head reads the
embedding; the likes regressor reads the embedding together with the scaled numeric features.
A run folder holds ``model.safetensors`` (weights only: no pickles) and ``config.json`` (everything
needed to rebuild the network offline: component names and options, label names, scaler).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import AfterValidator, FiniteFloat, NonNegativeInt, TypeAdapter, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from instacli import __version__, registry
from instacli.encoders import ImageEncoder, Preprocess
from instacli.errors import InstacliError, invalid_file
from instacli.features import Scaler
from instacli.io import atomic_file, atomic_path
from instacli.registry import PositiveFloat
from instacli.regressors import LikesRegressor
from instacli.run_folder import CONFIG, WEIGHTS, is_run
from instacli.semantic import PriorKind, SemanticPrior


def _distinct(names: list[str]) -> list[str]:
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"repeats {', '.join(map(repr, repeated))}")
    return names


@dataclass
class ModelConfig:
    """What ``config.json`` stores about the network (everything but the weights).

    The annotations are what :func:`load_run` checks an edited or damaged file against (with
    pydantic; ``scaler`` against :class:`~instacli.features.Scaler`'s), before anything is built.
    """

    encoder: str
    encoder_options: dict[str, Any]
    regressor: str
    regressor_options: dict[str, Any]
    class_names: Annotated[list[str], AfterValidator(_distinct)]
    scaler: dict[str, Any]
    task: Literal["both", "category", "likes"] = "both"
    text_encoder: str | None = None
    text_options: dict[str, Any] = field(default_factory=dict)
    text_dim: NonNegativeInt = 0
    text_to_classifier: bool = False
    class_to_regressor: bool = False
    #: What the category head reads of the encoder's pretrained ImageNet head (``instacli.semantic``).
    semantic_prior: PriorKind | Literal["auto"] = "none"
    #: The category head is a linear probe on standardized features (frozen encoders, ``instacli.probe``)
    #: rather than LayerNorm → dropout → linear trained by the epoch loop.
    probe_head: bool = False
    preprocess: dict[str, Any] = field(default_factory=dict)
    #: Divides the category logits before the softmax; fitted on validation (:mod:`instacli.calibration`).
    temperature: PositiveFloat = 1.0
    #: Unfamiliarity score above which a photo is flagged; None for runs from before it was fitted.
    unfamiliar_threshold: FiniteFloat | None = None
    instacli_version: str = __version__

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


#: Width of the caption adapter's output, the text's share of the fused embedding.
TEXT_ADAPTER_DIM = 64
#: With a semantic prior, the embedding's logits are scaled by this before the prior's are added:
#: the 1280-d embedding fits the training sources' look so well that, at full weight, it outvotes
#: the prior on new sources (frozen EfficientNet-Lite0, posts-dev leave-sources-out, logistic
#: probes with the prior's ≥10-class groups, C = 0.01: share 1.0 → 97.0 %, 0.5 → 97.5 %, 0.3 → 97.2 %
#: on the held-out sources).
EMBEDDING_SHARE_WITH_PRIOR = 0.5


class Standardize(nn.Module):
    """``(x - mean) / std`` per feature, with statistics set from training data (:mod:`instacli.probe`).

    A linear probe needs each feature on one scale for one L2 strength to suit them all (as
    scikit-learn's ``StandardScaler``); a LayerNorm normalizes each row instead, and on frozen
    EfficientNet-Lite0 features that cost 4-10 points on new sources.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("std", torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


class MultiTaskModel(nn.Module):
    """Image encoder → category logits; [image embedding ⊕ caption ⊕ numeric features ⊕ category
    probabilities] → standardized log1p(likes).

    Captions, when used, arrive as frozen text-encoder vectors and pass a per-modality adapter
    (LayerNorm → Linear → GELU) before concatenation with the image embedding (late fusion); the
    classifier sees them only with ``text_to_classifier``. With a ``semantic_prior`` the classifier
    also reads what the encoder's pretrained ImageNet head says of the photo (:mod:`instacli.semantic`),
    normalized on its own so that neither part drowns the other.
    """

    def __init__(
        self,
        encoder: ImageEncoder,
        regressor: LikesRegressor | None,
        num_classes: int,
        text_dim: int = 0,
        text_to_classifier: bool = False,
        class_to_regressor: bool = False,
        semantic_prior: PriorKind | Literal["auto"] = "none",
        probe_head: bool = False,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if semantic_prior != "none" and getattr(encoder, "imagenet_head", None) is None:
            raise InstacliError(f"semantic prior '{semantic_prior}' needs an encoder with a pretrained ImageNet head; use --semantic-prior none")
        self.encoder = encoder
        self.text_adapter = (
            nn.Sequential(nn.LayerNorm(text_dim), nn.Linear(text_dim, TEXT_ADAPTER_DIM), nn.GELU()) if text_dim else None
        )
        self.text_to_classifier = text_to_classifier and text_dim > 0
        self.prior = SemanticPrior(semantic_prior) if semantic_prior != "none" and num_classes > 0 else None
        norm = Standardize if probe_head else nn.LayerNorm
        self.prior_norm = norm(self.prior.dim) if self.prior is not None else None
        if self.prior is None and getattr(encoder, "imagenet_head", None) is not None:
            encoder.imagenet_head = None  # unused: keep it out of the saved weights
        width = encoder.embed_dim + (TEXT_ADAPTER_DIM if self.text_to_classifier else 0)
        if num_classes == 0:
            self.classifier = None
        elif probe_head:
            self.classifier = nn.Sequential(Standardize(width), nn.Linear(width, num_classes))
        else:
            self.classifier = nn.Sequential(nn.LayerNorm(width), nn.Dropout(dropout), nn.Linear(width, num_classes))
        self.prior_classifier = nn.Linear(self.prior.dim, num_classes, bias=False) if self.prior is not None else None
        self.regressor = regressor
        self.class_to_regressor = class_to_regressor and self.classifier is not None

    def fuse(self, embedding: torch.Tensor, text: torch.Tensor | None) -> torch.Tensor:
        """The regressor's view of a post: image embedding, plus the adapted caption when captions are used."""
        if self.text_adapter is None or text is None:
            return embedding
        return torch.cat([embedding, self.text_adapter(text)], dim=1)

    def classify(self, embedding: torch.Tensor, fused: torch.Tensor) -> torch.Tensor | None:
        if self.classifier is None:
            return None
        logits = self.classifier(fused if self.text_to_classifier else embedding)
        if self.prior is not None:
            prior = self.prior(self.encoder.imagenet_head(embedding.float()))
            logits = EMBEDDING_SHARE_WITH_PRIOR * logits + self.prior_classifier(self.prior_norm(prior).to(logits.dtype))
        return logits

    def _numbers(self, features: torch.Tensor, logits: torch.Tensor | None) -> torch.Tensor:
        """The regressor's numeric input: the scaled features, then the category head's probabilities.

        The category is often the strongest single cue to likes, and the classifier reads it from the
        image better than the regressor's small image adapter can. Without it the regressor guessed
        the category from the numbers and hedged (vit-scratch on posts-dev: likes MAE 1.09× the
        class-median oracle; with it 1.07×, one run each). Detached: the likes loss must not bend the classifier.
        """
        if not self.class_to_regressor or logits is None:
            return features
        return torch.cat([features, logits.detach().float().softmax(dim=1).to(features.dtype)], dim=1)

    def likes_inputs(
        self, embedding: torch.Tensor, features: torch.Tensor, text: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The two inputs of the likes regressor (what the scikit-learn regressors are fitted on)."""
        fused = self.fuse(embedding, text)
        return fused, self._numbers(features, self.classify(embedding, fused))

    def heads(
        self, embedding: torch.Tensor, features: torch.Tensor, text: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Both heads on a precomputed image embedding (used directly when the encoder is frozen and cached)."""
        fused = self.fuse(embedding, text)
        logits = self.classify(embedding, fused)
        likes = self.regressor(fused, self._numbers(features, logits)) if self.regressor is not None else None
        return logits, likes

    def forward(
        self, inputs: torch.Tensor, features: torch.Tensor, text: torch.Tensor | None = None, embedded: bool = False
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``inputs`` are pixels, or precomputed embeddings when ``embedded`` (frozen, cached encoder)."""
        return self.heads(inputs if embedded else self.encoder(inputs), features, text)


def parameter_count(module: nn.Module) -> int:
    """Number of weights of ``module`` (every parameter, trainable or not)."""
    return sum(p.numel() for p in module.parameters())


def build_model(config: ModelConfig) -> MultiTaskModel:
    """Instantiate the network described by ``config`` (weights initialized or pretrained, not loaded).

    A ``semantic_prior`` of ``auto`` becomes the encoder's recipe (``grouped`` for encoders with an
    ImageNet head, see :mod:`instacli.semantic`) or ``none``, and is written back into ``config``.
    """
    encoder = registry.encoders.create(config.encoder, **config.encoder_options)
    if config.semantic_prior == "auto":
        recipe = registry.encoders.get(config.encoder).recipe.get("semantic_prior", "none")
        config.semantic_prior = recipe if getattr(encoder, "imagenet_head", None) is not None else "none"
    regressor = None
    num_classes = 0 if config.task == "likes" else len(config.class_names)
    if config.task != "category":
        regressor = registry.regressors.create(
            config.regressor,
            embed_dim=encoder.embed_dim + (TEXT_ADAPTER_DIM if config.text_dim else 0),
            num_features=len(config.scaler["features"]) + (num_classes if config.class_to_regressor else 0),
            **config.regressor_options,
        )
    return MultiTaskModel(
        encoder, regressor, num_classes, config.text_dim, config.text_to_classifier, config.class_to_regressor, config.semantic_prior,
        config.probe_head,
    )


@dataclass
class LoadedRun:
    """A trained run ready for inference."""

    path: Path
    config: ModelConfig
    model: MultiTaskModel
    scaler: Scaler

    @property
    def preprocess(self) -> Preprocess:
        return self.model.encoder.preprocess


def save_model(run: Path, model: MultiTaskModel, config: ModelConfig) -> None:
    """Write ``model.safetensors`` and ``config.json`` atomically (the config records the rebuild options)."""
    config.encoder_options = dict(model.encoder.saved_options or config.encoder_options)
    config.preprocess = model.encoder.preprocess.to_dict()
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(run / WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "instacli_version": __version__})
    with atomic_file(run / CONFIG) as handle:
        json.dump(config.to_json(), handle, indent=2)


#: Fix of every problem :func:`load_run` finds in a run folder's files.
_DAMAGED = "the run folder was edited or damaged: restore it from a copy or retrain the run"


def read_config(path: Path) -> tuple[ModelConfig, Scaler]:
    """A run's ``config.json`` and its scaler, checked against :class:`ModelConfig` and :class:`Scaler`;
    a list, a missing key, a NaN or an unknown task is a one-line error naming the key."""
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InstacliError(f"{path}: not valid JSON ({exc}); {_DAMAGED}") from None
    try:
        config = TypeAdapter(ModelConfig).validate_python(raw)
    except ValidationError as exc:
        raise invalid_file(path, exc, _DAMAGED) from None
    try:
        return config, TypeAdapter(Scaler).validate_python(config.scaler)
    except ValidationError as exc:
        raise invalid_file(path, exc, _DAMAGED, key="scaler") from None


def load_run(run: Path | str) -> LoadedRun:
    """Rebuild a trained network from a run folder, with no network access. A tampered or damaged
    ``config.json`` or ``model.safetensors`` is a one-line error naming the file, never a traceback."""
    run = Path(run)
    config_path, weights = run / CONFIG, run / WEIGHTS
    if not is_run(run):
        raise InstacliError(f"{run}: not a trained run (needs config.json and model.safetensors); train one with `instacli train --out {run}`")
    config, scaler = read_config(config_path)
    try:
        registry.encoders.check(config.encoder, config.encoder_options)
        registry.regressors.check(config.regressor, config.regressor_options)
        model = build_model(config)  # options that do not fit together (patch_size 7 of image_size 32) were unnamed
    except InstacliError as exc:
        raise InstacliError(f"{config_path}: {str(exc).removesuffix(f'; {registry.FIX_OPTIONS}')}; {_DAMAGED}") from None
    try:
        state = load_file(str(weights))
    except SafetensorError as exc:
        raise InstacliError(f"{weights}: not a readable safetensors file ({exc}); {_DAMAGED}") from None
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # "Error(s) in loading state_dict ...:" then one tab-indented line per tensor
        detail = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), str(exc))
        raise InstacliError(f"{weights}: does not match config.json ({detail}); {_DAMAGED}") from None
    if missing or unexpected:
        raise InstacliError(f"{weights}: does not match config.json (missing {missing[:3]}, unexpected {unexpected[:3]}); {_DAMAGED}")
    broken = next((name for name, tensor in state.items() if tensor.is_floating_point() and not tensor.isfinite().all()), None)
    if broken is not None:  # every answer would be NaN: predict crashed on the likes, evaluate scored all one class
        raise InstacliError(f"{weights}: {broken} holds NaN or infinite values (a diverged training or a damaged file); {_DAMAGED}")
    model.eval()
    return LoadedRun(path=run, config=config, model=model, scaler=scaler)
