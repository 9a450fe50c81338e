"""Token counting per model: a real tokenizer when one is installed, else the heuristic.

With ``tokenizer = "auto"`` an OpenAI-compatible model is counted with ``tiktoken`` when
that package is installed and knows the model (its encodings ship as files it may need
to fetch once; any failure falls back). Everything else, and ``"heuristic"``, uses
`chatkeep.domain.tokens.estimate_tokens`. The context window only needs a count that
errs a little high, so the fallback is always safe.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from chatkeep.domain.tokens import TokenEstimator, estimate_tokens
from chatkeep.settings import ModelConfig

logger = logging.getLogger("chatkeep.providers")


def estimator_for(name: str, config: ModelConfig) -> TokenEstimator:
    """The token estimator of model ``name``."""
    if config.tokenizer == "heuristic" or config.provider != "openai":
        return estimate_tokens
    try:
        tiktoken: Any = importlib.import_module("tiktoken")
        encoding = tiktoken.encoding_for_model(config.upstream_model or name)
    except Exception as exc:  # not installed, unknown model, or its files unreachable
        logger.debug("model %s: heuristic token counts (%s)", name, type(exc).__name__)
        return estimate_tokens

    def count(text: str) -> int:
        return len(encoding.encode(text, disallowed_special=()))

    return count
