"""Report: the pydantic schema (the contract), building, validation, JSON encoding, legacy reading.

Knows nothing of where reports go. Never imports torch.
"""
