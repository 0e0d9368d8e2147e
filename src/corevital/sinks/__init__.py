"""Sinks: persistence you can query back (SQLite by default, JSON files, PostgreSQL).

Never runs models and never imports torch.
"""
