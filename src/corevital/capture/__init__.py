"""Capture: loading models, the model registry, and generation observed step by step.

Owns everything that touches a Hugging Face model: resolving a model name (Hub id, local
directory, GGUF file, the embedded default), probing its capabilities, running ``generate()``
with observers installed by a context manager, and handing each step's tensors to ``metrics``
the moment they exist. It keeps no tensor beyond the current step and computes no statistic
itself. Importing this package does not import torch; its submodules do.
"""
