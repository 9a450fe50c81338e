"""HTTP routes: conversations, OpenAI-compatible endpoints, health."""
