"""A tiny GGUF file written by the tests themselves: the tiny random Llama and its tokenizer, as
llama.cpp's ``convert_hf_to_gguf.py`` would write them.

The only real GGUF the suite otherwise reads is the default model's (98 MB), too large to carry to a
GPU machine; this one is about 460 KB (F32) and takes a few milliseconds to write. What it holds:

- metadata under llama.cpp's key names: ``general.architecture = "llama"``, ``llama.block_count``,
  ``llama.embedding_length``, ``llama.attention.head_count(_kv)``, ``llama.rope.freq_base``...;
- the tokenizer as metadata: ``tokenizer.ggml.model = "gpt2"`` (byte-level BPE), its tokens with
  their types (the four special tokens CONTROL, the rest NORMAL), its merges as ``"left right"``
  strings, the bos/eos/unk/pad ids and ``tokenizer.ggml.add_bos_token`` (the tiny tokenizer
  prepends ``<s>``);
- the weights under llama.cpp's tensor names (``token_embd``, ``blk.N.attn_q``..., ``output``),
  with the query and key projections permuted as llama.cpp's converter permutes them (its rotary
  kernel pairs neighbouring dimensions; transformers pairs the two halves and undoes the permutation
  when it loads the file).

Weights are F32 (exact), or with ``quantized=True`` the 2-D projection matrices are Q8_0 (what
llama.cpp calls an 8-bit file; de-quantised on load, so the loaded model differs from the source by
the rounding, about 1e-3 relative): embeddings, norms and the output head stay F32, as llama.cpp's
own Q8_0 conversion keeps norms in F32.

Typical use::

    path = write_tiny_gguf(tmp_path / "tiny-llama.gguf")
    model = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name)
    # equals build_family_model("llama", seed=0) up to float rounding
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from tests.support.tiny_models import TinyModel, build_family_model, build_tokenizer
from tests.support.tiny_tokenizer import BOS_TOKEN_ID, EOS_TOKEN_ID, PAD_TOKEN_ID, UNK_TOKEN_ID

ARCHITECTURE = "llama"
NAME = "corevital-tiny-llama"

# llama.cpp's token types (gguf.TokenType)
_NORMAL, _CONTROL = 1, 3

# transformers parameter name (after "model.layers.N.") -> llama.cpp tensor name (after "blk.N.")
_LAYER_TENSORS = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
_GLOBAL_TENSORS = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def llama_cpp_permute(weights: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """The permutation llama.cpp's converter applies to the query and key projections.

    Its rotary embedding rotates neighbouring pairs of dimensions, transformers' rotates the first
    half against the second: per head, rows ``(0, d/2, 1, d/2+1, ...)`` become ``(0, 1, 2, ...)``.
    A copy of ``LlamaModel.permute`` in llama.cpp's ``convert_hf_to_gguf.py``.
    """
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def gguf_tensors(model: TinyModel) -> dict[str, np.ndarray]:
    """The model's parameters under llama.cpp's names, in the layout llama.cpp writes (float32)."""
    config = model.config
    heads, kv_heads = int(config.num_attention_heads), int(config.num_key_value_heads)
    tensors: dict[str, np.ndarray] = {}
    for name, parameter in model.state_dict().items():
        array = parameter.detach().to(torch.float32).cpu().numpy()
        if name in _GLOBAL_TENSORS:
            tensors[_GLOBAL_TENSORS[name]] = array
            continue
        prefix, _, rest = name.partition(".layers.")
        index, _, local = rest.partition(".")
        if prefix != "model" or local not in _LAYER_TENSORS:
            raise ValueError(f"no llama.cpp name for {name}")
        if local == "self_attn.q_proj.weight":
            array = llama_cpp_permute(array, heads, heads)
        elif local == "self_attn.k_proj.weight":
            array = llama_cpp_permute(array, heads, kv_heads)
        tensors[f"blk.{index}.{_LAYER_TENSORS[local]}"] = np.ascontiguousarray(array)
    return tensors


def _tokenizer_metadata(tokenizer: Any) -> tuple[list[str], list[int], list[str]]:
    """Tokens in id order, their llama.cpp types, and the BPE merges as ``"left right"``."""
    import json

    state = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab: dict[str, int] = state["model"]["vocab"]
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    if [vocab[t] for t in tokens] != list(range(len(tokens))):
        raise ValueError("the tokenizer's ids are not 0..n-1")
    special = {int(t["id"]) for t in state["added_tokens"] if t.get("special")}
    types = [_CONTROL if index in special else _NORMAL for index in range(len(tokens))]
    merges = [m if isinstance(m, str) else " ".join(m) for m in state["model"]["merges"]]
    return tokens, types, merges


def write_tiny_gguf(
    path: Path, *, seed: int = 0, quantized: bool = False, model: TinyModel | None = None
) -> Path:
    """Write the tiny Llama (``build_family_model("llama", seed=seed)`` unless ``model`` is given)
    and :func:`~tests.support.tiny_models.build_tokenizer`'s tokenizer as a GGUF file at ``path``."""
    import gguf

    source = model if model is not None else build_family_model(ARCHITECTURE, seed=seed)
    config = source.config
    if config.model_type != "llama" or config.tie_word_embeddings:
        raise ValueError("write_tiny_gguf writes an untied llama model")
    tokens, types, merges = _tokenizer_metadata(build_tokenizer())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), ARCHITECTURE)
    writer.add_name(NAME)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if quantized else gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_block_count(int(config.num_hidden_layers))
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_head_count(int(config.num_attention_heads))
    writer.add_head_count_kv(int(config.num_key_value_heads))
    writer.add_rope_dimension_count(int(config.head_dim))
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(int(config.vocab_size))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(BOS_TOKEN_ID)
    writer.add_eos_token_id(EOS_TOKEN_ID)
    writer.add_unk_token_id(UNK_TOKEN_ID)
    writer.add_pad_token_id(PAD_TOKEN_ID)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    if quantized:
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for name, array in gguf_tensors(source).items():
        if quantized and array.ndim == 2 and name.startswith("blk."):
            qtype = gguf.GGMLQuantizationType.Q8_0
            writer.add_tensor(name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
