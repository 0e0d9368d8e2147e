"""Measured detection quality: running labelled prompts, answer checking, the validation table
and its plots."""
