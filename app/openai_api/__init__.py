"""An OpenAI-compatible API under /v1: existing OpenAI client code works by changing base_url."""
