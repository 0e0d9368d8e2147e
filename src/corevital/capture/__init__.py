"""Capture: loading models, the model registry, and generation observed step by step.

Owns everything that touches a Hugging Face model: resolving a model name (Hub id, local
directory, GGUF file, the embedded default), probing its capabilities, running ``generate()``
with observers installed by a context manager, and handing the tensors of each step to
``metrics``, whose functions compute every statistic. Between steps it holds only references to
the raw rows of the steps of one window, bounded in bytes (:mod:`.steps`), and of the pass over a
prompt only what each layer leaves behind (:mod:`.layer_stream`); a step's layer outputs are read by
wrappers around the layers (:mod:`.layer_outputs`). Importing this package does not import torch;
its submodules do.
"""
