"""Row-wise operations on a transformers ``DynamicCache`` (the search's KV memory).

The search keeps one cache row per live hypothesis. Expanding a beam into its candidates selects
(copies) rows; committing tokens crops the sequence dimension back to the committed length. Both
work on every layer's key/value tensors directly, so no prefix is ever recomputed.
"""

from __future__ import annotations

import copy

import torch


def select_rows(cache, index: torch.Tensor):
    """A new cache holding ``cache``'s rows ``index`` (may repeat rows); ``cache`` is untouched."""
    new = copy.copy(cache)
    new.layers = []
    for layer in cache.layers:
        twin = copy.copy(layer)
        if getattr(layer, "is_initialized", True) and layer.keys is not None and layer.keys.numel():
            idx = index.to(layer.keys.device)
            twin.keys = layer.keys.index_select(0, idx)
            twin.values = layer.values.index_select(0, idx)
        new.layers.append(twin)
    return new


def crop(cache, length: int):
    """Keep the first ``length`` positions of every layer (in place); returns ``cache``."""
    for layer in cache.layers:
        if getattr(layer, "is_initialized", True) and layer.keys is not None and layer.keys.numel():
            if layer.keys.shape[-2] > length:
                layer.keys = layer.keys[..., :length, :]
                layer.values = layer.values[..., :length, :]
    return cache


def seq_length(cache) -> int:
    return cache.get_seq_length()
