"""Ways of running the LM for the search (see :mod:`deal_core.backends.base` for the seam).

``hf`` (transformers in process, the default), ``vllm`` (vLLM in process) and ``server`` (an
OpenAI-compatible inference server over HTTP: ``base_url=...``). :func:`create_backend`
builds one by name; the vLLM import happens only when that backend is asked for.
"""

from __future__ import annotations

from .base import Backend, Prefilled, StepRequest, StepResult, TokenConstraint

BACKENDS = ("hf", "vllm", "server")

__all__ = ["BACKENDS", "Backend", "Prefilled", "StepRequest", "StepResult", "TokenConstraint"]
