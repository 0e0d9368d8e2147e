"""Exporters: push or pull reports into observability systems (Prometheus, OTel, Datadog, W&B, HTTP).

Each is imported lazily behind an optional extra; a failing exporter never breaks a generation.
"""
