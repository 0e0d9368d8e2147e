"""Per-step and per-layer report models: the timeline entry and the layer summaries.

Definitions of every number are in ``docs/metrics.md`` §1–3. Field names follow the original
CoreVital schema 0.4.0; fields marked *new* are 0.5.0 additions.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from corevital.report.schema_base import FloatList, OptFloat, ReportModel


class TokenInfo(ReportModel):
    """The token produced at a step."""

    token_id: int
    token_text: str
    is_prompt_token: bool = False


class TopKProb(ReportModel):
    """One of the most likely tokens of a step."""

    token_id: int
    token_text: str
    prob: OptFloat = None


class LogitsSummary(ReportModel):
    """Statistics of the step's next-token distribution (``metrics.md`` §1).

    Legacy names are read by :mod:`corevital.report.legacy` and never written: ``voter_agreement``
    is ``topk_mass``, ``top1_top2_margin`` is ``top_k_margin`` and ``topk`` is ``topk_probs``.
    """

    entropy: OptFloat = Field(default=None, description="Shannon entropy in bits of softmax(raw logits).")
    perplexity: OptFloat = Field(default=None, description="2 ** entropy.")
    surprisal: OptFloat = Field(default=None, description="-log2 p of the chosen token, in bits.")
    top_k_margin: OptFloat = Field(default=None, description="p(1) - p(2).")
    topk_mass: OptFloat = Field(default=None, description="Sum of the 10 largest probabilities.")
    topk_probs: list[TopKProb] = Field(default_factory=list)
    sampling_entropy: OptFloat = Field(
        default=None, description="New: entropy (bits) of the distribution actually sampled from."
    )
    sampling_prob: OptFloat = Field(
        default=None, description="New: probability of the chosen token in the sampled distribution."
    )
    has_nan: bool | None = Field(default=None, description="New: the step's logits held NaN.")
    has_inf: bool | None = Field(default=None, description="New: the step's logits held +Inf.")
    entropy_lower: OptFloat = Field(
        default=None,
        description="New: logprobs capture only (capture.source = logprobs), where entropy is an "
        "estimate: the lower bound in bits, the remaining probability mass counted as one token.",
    )
    entropy_upper: OptFloat = Field(
        default=None,
        description="New: logprobs capture only (capture.source = logprobs), where entropy is an "
        "estimate: the upper bound in bits, the remaining probability mass spread uniformly over the "
        "rest of the vocabulary (null when the vocabulary size is unknown).",
    )
    remaining_mass: OptFloat = Field(
        default=None,
        description="New: logprobs capture only: 1 - the probabilities the engine listed (the chosen "
        "token and its top_logprobs alternatives), the mass the entropy bounds account for.",
    )


class HiddenSummary(ReportModel):
    """Statistics of one layer's hidden vector at the decoded position (``metrics.md`` §2)."""

    mean: OptFloat = None
    std: OptFloat = None
    l2_norm_mean: OptFloat = None
    max_abs: OptFloat = None
    sketch: FloatList | None = Field(default=None, description="Random projection of the hidden vector.")
    clipped: bool = Field(
        default=False, description="Values beyond +-1e6 were clamped before the statistics."
    )
    clip_fraction: OptFloat = None
    clip_max_before: OptFloat = None


class AttentionSummary(ReportModel):
    """Statistics of one layer's attention rows over heads (``metrics.md`` §3).

    Used for self-attention (``attention_summary``) and cross-attention (``cross_attention``).
    Entropies are in nats.
    """

    entropy_mean: OptFloat = None
    entropy_mean_normalized: OptFloat = Field(default=None, description="Mean of entropy / ln K, in [0, 1].")
    entropy_min: OptFloat = None
    entropy_max: OptFloat = None
    concentration_max: OptFloat = None
    concentration_min: OptFloat = None
    collapsed_head_count: int | None = Field(default=None, description="Null when K < 4.")
    collapsed_head_rate: OptFloat = Field(default=None, description="collapsed_head_count / heads.")
    focused_head_count: int | None = None
    max_weight_per_head: FloatList | None = None
    sink_mass_mean: OptFloat = Field(default=None, description="New: mean weight on the first key.")
    prev_token_mass_mean: OptFloat = Field(default=None, description="New: mean weight on the previous key.")
    prev_token_mass_max: OptFloat = Field(default=None, description="New: max weight on the previous key.")


class Anomalies(ReportModel):
    """NaN/Inf seen in a layer's tensors before clamping."""

    has_nan: bool = False
    has_inf: bool = False


class LayerSummary(ReportModel):
    """One decoder layer at one step (timeline), or one encoder layer (``encoder_layers``)."""

    layer_index: int
    hidden_summary: HiddenSummary = Field(default_factory=HiddenSummary)
    attention_summary: AttentionSummary = Field(
        default_factory=AttentionSummary, description="Self-attention, for decoder and encoder layers alike."
    )
    cross_attention: AttentionSummary | None = Field(
        default=None, description="Decoder-to-encoder attention (encoder-decoder models only)."
    )
    anomalies: Anomalies | None = None
    extensions: dict[str, Any] = Field(default_factory=dict)


class TimelineStep(ReportModel):
    """One generated token: ``step_index`` is ``prompt_tokens + t``."""

    step_index: int
    token: TokenInfo
    logits_summary: LogitsSummary = Field(default_factory=LogitsSummary)
    layers: list[LayerSummary] = Field(
        default_factory=list, description="Decoder layer summaries (empty in summary capture)."
    )
    extensions: dict[str, Any] = Field(default_factory=dict)
