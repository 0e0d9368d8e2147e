"""The random-weight model shapes of the benchmarks (one table: bench/overhead.py and bench/multi_gpu.py).

Each entry is the keyword arguments of a ``transformers.LlamaConfig`` (the scripts add the token ids).
``tiny`` is the test suite's tiny llama (tests/support/tiny_models.py: hidden size, heads, key-value
heads, MLP width) with four layers, so that two and four devices each get whole layers, and room for
the benchmarks' longest case (512 prompt tokens and 200 new ones).
"""

from __future__ import annotations

from typing import Any

from tests.support.tiny_models import EXPECTED


def _tiny() -> dict[str, Any]:
    llama = EXPECTED["llama"]
    return dict(
        hidden_size=llama.hidden_size,
        intermediate_size=2 * llama.hidden_size,
        num_hidden_layers=4,
        num_attention_heads=llama.num_heads,
        num_key_value_heads=llama.num_kv_heads,
        vocab_size=512,
        max_position_embeddings=1024,
    )


SHAPES: dict[str, dict[str, Any]] = {
    "llama3-70b": dict(
        hidden_size=8192,
        intermediate_size=28672,
        num_hidden_layers=80,
        num_attention_heads=64,
        num_key_value_heads=8,
        vocab_size=128256,
        max_position_embeddings=8192,
        rope_theta=500000.0,
    ),
    "llama3-8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        max_position_embeddings=8192,
        rope_theta=500000.0,
    ),
    # Llama-3-8B's layout (32 layers, 32 query / 8 key-value heads) shrunk to almost no arithmetic:
    # on a CPU its generation time is Python and dispatch, like a launch-bound GPU at batch 1, so
    # CoreVital's per-step Python cost can be measured (and cut) without a GPU.
    "llama3-8b-narrow": dict(
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=4096,
        max_position_embeddings=8192,
        rope_theta=500000.0,
    ),
    # The same layout with next to no arithmetic at all (hidden size 64): what a step costs is the
    # host's dispatch and Python alone, for counting instructions (bench/host_instructions.py).
    "llama3-8b-thin": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=1024,
        max_position_embeddings=8192,
        rope_theta=500000.0,
    ),
    "smollm2-135m": dict(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
    ),
    "tiny": _tiny(),
}
