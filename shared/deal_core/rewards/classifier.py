"""Any Hugging Face sequence-classification model as a reward: reward models and labelled classifiers.

It brings its own tokenizer, so it need not share the LM's vocabulary. One batched forward per step.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

import torch

from ..errors import ConfigError, DeALError, ModelLoadError, RewardError
from ..models import resolve_device
from .base import Reward


class ClassifierReward(Reward):
    """Score candidates with a sequence classifier.

    - **One-logit reward model** (``num_labels == 1``, e.g. the HH-RLHF reward models the DeAL
      paper used): the raw logit, range (-inf, inf) -- wrap it in
      :class:`~deal_core.rewards.normalize.Normalized` to bound it. Reads ``(prompt, reply)`` as a
      text pair by default.
    - **Labelled classifier** (e.g. toxicity): ``label`` (a name from ``config.id2label`` or an
      index) picks the class; the score is its probability, range [0, 1] (softmax, or sigmoid for
      ``problem_type="multi_label_classification"``). Reads the reply alone by default.

    ``model``: a Hugging Face id, a local directory, or a loaded model (then pass ``tokenizer``).
    ``pair``: feed ``(prompt, reply)`` as a text pair (None = auto, as above).
    """

    def __init__(self, model: Any, label: str | int | None = None, *, tokenizer: Any = None,
                 pair: bool | None = None, device: str | torch.device | None = "cpu",
                 max_length: int = 512, batch_size: int = 16, name: str | None = None) -> None:
        self.model, self.tokenizer = self._load(model, tokenizer, device)
        self.device = next(self.model.parameters()).device
        config = self.model.config
        self.num_labels = int(getattr(config, "num_labels", 1))
        self.multi_label = getattr(config, "problem_type", None) == "multi_label_classification"
        self.label_index = self._label_index(label, config)
        self.pair = (self.num_labels == 1) if pair is None else pair
        self.max_length, self.batch_size = max_length, batch_size
        if self.label_index is None:
            self.low, self.high = float("-inf"), float("inf")
            default = "reward_model"
        else:
            self.low, self.high = 0.0, 1.0
            default = str(config.id2label.get(self.label_index, self.label_index)).lower()
        self.name = name or default
        self._lock = threading.Lock()

    def identity(self) -> str | None:
        source = getattr(self.model.config, "_name_or_path", None)
        if not source:
            return None  # a model object built in memory: nothing names its weights
        return (f"ClassifierReward({source!r}, label={self.label_index}, pair={self.pair}, "
                f"max_length={self.max_length}, name={self.name!r})")

    @staticmethod
    def _load(model: Any, tokenizer: Any, device) -> tuple[Any, Any]:
        if isinstance(model, (str, os.PathLike)):
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            try:
                tok = tokenizer if tokenizer is not None and not isinstance(tokenizer, (str, os.PathLike)) \
                    else AutoTokenizer.from_pretrained(str(tokenizer or model))
                clf = AutoModelForSequenceClassification.from_pretrained(str(model))
            except (OSError, ValueError) as exc:
                raise ModelLoadError(
                    f"ClassifierReward could not load {str(model)!r}: {exc}. Fix: pass a local directory "
                    "holding a sequence-classification model and its tokenizer, or a loaded model "
                    "with tokenizer=") from exc
        else:
            clf, tok = model, tokenizer
            if not hasattr(clf, "config") or not callable(clf):
                raise ConfigError(f"ClassifierReward needs a model id/path or a loaded HF model, got "
                                  f"{type(model).__name__}")
            if tok is None:
                raise ConfigError("ClassifierReward with a loaded model needs tokenizer=")
        clf.to(resolve_device(device))
        clf.eval()
        if getattr(tok, "pad_token", None) is None and getattr(tok, "eos_token", None) is not None:
            tok.pad_token = tok.eos_token
        if getattr(clf.config, "pad_token_id", None) is None:
            clf.config.pad_token_id = tok.pad_token_id
        return clf, tok

    def _label_index(self, label: str | int | None, config) -> int | None:
        names = {str(v): int(k) for k, v in (getattr(config, "id2label", None) or {}).items()}
        if label is None:
            if self.num_labels == 1:
                return None
            raise ConfigError(f"ClassifierReward: this classifier has {self.num_labels} labels "
                              f"{sorted(names)}; pick one with label=")
        if isinstance(label, int) and not isinstance(label, bool):
            if 0 <= label < self.num_labels:
                return label
        elif isinstance(label, str):
            if label in names:
                return names[label]
            folded = {k.lower(): v for k, v in names.items()}
            if label.lower() in folded:
                return folded[label.lower()]
        raise ConfigError(f"ClassifierReward: label {label!r} does not exist; the model's labels are "
                          f"{sorted(names)} (or an index 0..{self.num_labels - 1})")

    def score(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        out: list[float] = []
        try:
            for start in range(0, len(candidates), self.batch_size):
                out += self._score(prompt, list(candidates[start:start + self.batch_size]))
        except DeALError:
            raise
        except Exception as exc:
            raise RewardError(f"reward {self.name!r}: classifier failed: {type(exc).__name__}: {exc}",
                              reward_name=self.name) from exc
        return out

    def _score(self, prompt: str, texts: list[str]) -> list[float]:
        args = ([prompt] * len(texts), texts) if self.pair else (texts,)
        enc = self.tokenizer(*args, padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt").to(self.device)
        with torch.inference_mode():
            logits = self.model(**enc).logits.float()
        if self.label_index is None:
            return logits[:, 0].tolist()
        probs = torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=-1)
        return probs[:, self.label_index].tolist()
