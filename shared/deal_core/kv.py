"""Row-wise operations on a transformers ``DynamicCache`` (the search's KV memory).

The search keeps one cache row per live hypothesis. Expanding a beam into its candidates selects
(copies) rows; committing tokens crops the sequence dimension back to the committed length. Several
requests share one forward by left-padding their caches to a common length and stacking their rows
(:func:`merge_expanded`); each request later takes its own rows back out (:func:`take`). All of it
works on every layer's key/value tensors directly, so no prefix is ever recomputed.
"""

from __future__ import annotations

import copy
import inspect
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import torch


_CACHE_ARG: dict[type, str] = {}  # per model class: the forward's name for the KV cache
_KEEPS_LOGITS: dict[type, bool] = {}  # per model class: whether the forward takes logits_to_keep


def cache_kwargs(model: Any, cache: Any) -> dict[str, Any]:
    """The keyword that hands ``cache`` to ``model``'s forward: ``cache`` where transformers has
    renamed it (5.x warns on ``past_key_values``), ``past_key_values`` on versions before that."""
    cls = type(model)
    arg = _CACHE_ARG.get(cls)
    if arg is None:
        arg = "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"
        _CACHE_ARG[cls] = arg
    return {arg: cache, "use_cache": True}


def takes_logits_to_keep(model: Any) -> bool:
    """Whether ``model``'s forward accepts ``logits_to_keep`` (project only some positions onto the
    vocabulary): checked once per model class, as :func:`cache_kwargs` does for the cache's name."""
    cls = type(model)
    keep = _KEEPS_LOGITS.get(cls)
    if keep is None:
        keep = _KEEPS_LOGITS[cls] = "logits_to_keep" in inspect.signature(cls.forward).parameters
    return keep


def _filled(layer) -> bool:
    return getattr(layer, "is_initialized", True) and layer.keys is not None and layer.keys.numel() > 0


def _with_layers(template, layers: list):
    new = copy.copy(template)
    new.layers = layers
    return new


def select_rows(cache, index: torch.Tensor):
    """A new cache holding ``cache``'s rows ``index`` (may repeat rows); ``cache`` is untouched."""
    layers = []
    for layer in cache.layers:
        twin = copy.copy(layer)
        if _filled(layer):
            idx = index.to(layer.keys.device)
            twin.keys = layer.keys.index_select(0, idx)
            twin.values = layer.values.index_select(0, idx)
        layers.append(twin)
    return _with_layers(cache, layers)


def crop(cache, length: int):
    """Keep the first ``length`` positions of every layer (in place); returns ``cache``."""
    for layer in cache.layers:
        if _filled(layer) and layer.keys.shape[-2] > length:
            layer.keys = layer.keys[..., :length, :]
            layer.values = layer.values[..., :length, :]
    return cache


def take(cache, rows: torch.Tensor, start: int, end: int):
    """A new, compact cache: rows ``rows`` and positions ``start:end`` of ``cache`` (untouched).

    Used to pull one request's surviving rows out of a shared batch, dropping the left padding other
    requests needed and the rollout positions past what the request committed.
    """
    layers = []
    for layer in cache.layers:
        twin = copy.copy(layer)
        if _filled(layer):
            idx = rows.to(layer.keys.device)
            # index_select of the narrowed view copies only what is kept (and returns it contiguous).
            twin.keys = layer.keys[..., start:end, :].index_select(0, idx)
            twin.values = layer.values[..., start:end, :].index_select(0, idx)
        layers.append(twin)
    return _with_layers(cache, layers)


def merge_expanded(parts: Sequence[tuple[Any, int]], width: int) -> Any:
    """One cache for a shared forward: each ``(cache, k)`` part's rows repeated ``k`` times each
    (beam -> its k candidates), left-padded with zeros to ``width`` positions, stacked in order.

    Each part must be compact (no padding of its own) and at most ``width`` long. Zeros, not
    garbage, fill the padding: masked positions still enter the attention product, and a NaN there
    would poison the row. With one part of full width this is exactly ``select_rows`` of the
    expanded parent index, so a request alone computes what it always did.
    """
    template = parts[0][0]
    n_rows = sum(c.layers[0].keys.shape[0] * k for c, k in parts)
    layers = []
    for i, layer in enumerate(template.layers):
        twin = copy.copy(layer)
        if _filled(layer):
            heads, dim = layer.keys.shape[1], layer.keys.shape[-1]
            shape = (n_rows, heads, width, dim)
            keys = layer.keys.new_zeros(shape)
            values = layer.values.new_zeros(shape)
            r0 = 0
            for cache, k in parts:
                src_k, src_v = cache.layers[i].keys, cache.layers[i].values
                beams, length = src_k.shape[0], src_k.shape[-2]
                r1 = r0 + beams * k
                # A broadcasting copy writes each beam k times with no intermediate tensor.
                keys[r0:r1].view(beams, k, heads, width, dim)[..., width - length:, :].copy_(src_k[:, None])
                values[r0:r1].view(beams, k, heads, width, dim)[..., width - length:, :].copy_(src_v[:, None])
                r0 = r1
            twin.keys, twin.values = keys, values
        layers.append(twin)
    return _with_layers(template, layers)


def cache_bytes(caches: Iterable[Any]) -> int:
    """Bytes held by the key/value tensors of ``caches`` (each distinct storage counted once)."""
    seen: set[int] = set()
    total = 0
    for cache in caches:
        if cache is None:
            continue
        for layer in cache.layers:
            if not _filled(layer):
                continue
            for t in (layer.keys, layer.values):
                storage = t.untyped_storage()
                if storage.data_ptr() not in seen:
                    seen.add(storage.data_ptr())
                    total += storage.nbytes()
    return total


class BoundedLRU:
    """A least-recently-used map bounded by entry count AND by bytes (``size_of(value)``).

    Used for the caches of prefixes' KV tensors (the judge's, the fluency reward's): counting entries
    alone does not bound memory, since one entry's size grows with its prompt (~96 MiB for a
    2000-token prompt on SmolLM2-135M). An entry larger than ``max_bytes`` is not kept at all.
    """

    def __init__(self, max_items: int, max_bytes: int, size_of) -> None:
        self.max_items, self.max_bytes, self._size_of = max_items, max_bytes, size_of
        self._items: OrderedDict[object, tuple[object, int]] = OrderedDict()
        self.bytes = 0

    def get(self, key, default=None):
        hit = self._items.get(key)
        if hit is None:
            return default
        self._items.move_to_end(key)
        return hit[0]

    def put(self, key, value) -> bool:
        """Keep ``value`` (evicting the least recently used); False if it alone is over budget."""
        if key in self._items:
            self.bytes -= self._items.pop(key)[1]
        size = self._size_of(value)
        if size > self.max_bytes or self.max_items < 1:
            return False
        self._items[key] = (value, size)
        self.bytes += size
        while len(self._items) > self.max_items or self.bytes > self.max_bytes:
            self.bytes -= self._items.popitem(last=False)[1][1]
        return True

    def __contains__(self, key) -> bool:
        return key in self._items

    def __getitem__(self, key):
        return self._items[key][0]

    def __iter__(self):
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)


def seq_length(cache) -> int:
    return cache.get_seq_length()
