"""Analysis: diagnosis over numpy arrays (health flags, risk, signals, blame, fingerprint, narrative).

Plain functions and small classes over host arrays. Never imports torch or transformers.
"""
