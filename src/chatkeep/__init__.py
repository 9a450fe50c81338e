"""chatkeep: a self-hosted conversation server for LLM applications."""

__version__ = "0.1.0"

__all__ = ["__version__"]
