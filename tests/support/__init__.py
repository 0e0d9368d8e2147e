"""Shared helpers for the test suite (offline tiny models and tokenizers)."""
