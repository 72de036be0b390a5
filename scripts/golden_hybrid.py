#!/usr/bin/env python3
"""Golden fixtures for Tritter's hybrid layers (model/src/hybrid/), computed by Hugging Face
transformers. Two cases, written to tests/golden/:

* `mamba2_tiny/` — a tiny random `Mamba2Model` (2 blocks), written with HF's own `save_pretrained`
  (config.json + model.safetensors, float32), loaded back with `from_pretrained`; `expected.safetensors`
  holds the token ids and what HF returns: every block's output over the whole sequence (the torch
  chunked scan, `mamba2_chunk_scan`, chunk 5 over 13 tokens), the final-normed hidden state, and the
  hidden states of a prefill of 6 tokens followed by 7 single-token steps through HF's cache (the
  recurrent path, `mamba2_selective_state_update`) with the SSM states after the prefill and at the end.
* `granite_hybrid_rope/`, `granite_hybrid_nope/` — tiny random dense (no experts)
  `GraniteMoeHybridForCausalLM`s, IBM Granite 4's hybrid: Mamba-2 layers (Bamba's mixer) and
  attention layers in one stack, each followed by the fused `shared_mlp`, with the embedding,
  residual, attention and logits multipliers set away from 1; one with RoPE, untied head and GQA,
  one without positions (Granite's default), tied, no conv bias. Written with `save_pretrained`;
  `expected.safetensors` holds the ids, the logits of the full forward and the logits of a prefill
  of 6 tokens followed by single-token steps through HF's cache.
* `gated_delta_rule/` — transformers' torch statement of the gated delta rule
  (`torch_recurrent_gated_delta_rule` from `models/qwen3_next`, the same as fla-org's
  `fused_recurrent_gated_delta_rule` with `use_qk_l2norm_in_kernel=True`) on random q, k, v, g, beta and a
  random initial state; its chunked statement (`torch_chunk_gated_delta_rule`, chunk 8) must agree
  before anything is written.

Usage: `python scripts/golden_hybrid.py` (deterministic: fixed seeds, CPU, float32, one thread;
versions as in scripts/requirements-golden.txt).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import (  # noqa: E402
    DynamicCache,
    GraniteMoeHybridConfig,
    GraniteMoeHybridForCausalLM,
    Mamba2Config,
    Mamba2Model,
)
from transformers.models.qwen3_next.modeling_qwen3_next import (  # noqa: E402
    torch_chunk_gated_delta_rule,
    torch_recurrent_gated_delta_rule,
)
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "golden"

MAMBA2 = dict(
    vocab_size=64, hidden_size=16, expand=2, num_heads=4, head_dim=8, state_size=8, n_groups=2,
    conv_kernel=4, num_hidden_layers=2, chunk_size=5, layer_norm_epsilon=1e-5, use_bias=False,
    use_conv_bias=True, pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
)
SEQ = 13
PREFILL = 6


def randomise(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Random weights that keep activations O(1) and every part visible: linears and convs
    N(0, 1/fan_in), biases N(0, 0.1²), norm weights U[0.5, 1.5), A_log = log U[1, 8),
    dt_bias N(−1, 0.5²) (dt ≈ 0.1–0.8), D N(1, 0.2²), embeddings N(0, 1)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            shape = p.shape
            if name.endswith("A_log"):
                v = torch.log(1.0 + 7.0 * torch.rand(shape, generator=gen))
            elif name.endswith("dt_bias"):
                v = -1.0 + 0.5 * torch.randn(shape, generator=gen)
            elif name.endswith(".D"):
                v = 1.0 + 0.2 * torch.randn(shape, generator=gen)
            elif "norm" in name:
                v = 0.5 + torch.rand(shape, generator=gen)
            elif name.endswith("bias"):
                v = 0.1 * torch.randn(shape, generator=gen)
            elif "embeddings" in name:
                v = torch.randn(shape, generator=gen)
            else:
                fan_in = p[0].numel()
                v = torch.randn(shape, generator=gen) / fan_in**0.5
            p.copy_(v)


def mamba2_case() -> None:
    gen = torch.Generator().manual_seed(2301)
    model = Mamba2Model(Mamba2Config(**MAMBA2)).eval()
    randomise(model, gen)
    out = GOLDEN / "mamba2_tiny"
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        model = Mamba2Model.from_pretrained(tmp, dtype=torch.float32).eval()
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        for f in ("config.json", "model.safetensors"):
            shutil.copy(Path(tmp) / f, out / f)
    ids = torch.randint(3, MAMBA2["vocab_size"], (1, SEQ), generator=gen)
    with torch.no_grad():
        full = model(input_ids=ids, use_cache=False, output_hidden_states=True)
        # hidden_states: each block's output, then the final-normed state (no embeddings entry).
        assert len(full.hidden_states) == MAMBA2["num_hidden_layers"] + 1
        blocks = full.hidden_states[:-1]
        cache = DynamicCache(config=model.config)
        pre = model(input_ids=ids[:, :PREFILL], cache=cache, use_cache=True)
        state_prefill = [cache.get_recurrent_state(i, state_idx=0).clone() for i in range(2)]
        steps = [pre.last_hidden_state]
        for t in range(PREFILL, SEQ):
            steps.append(model(input_ids=ids[:, t:t + 1], cache=cache, use_cache=True).last_hidden_state)
        state_end = [cache.get_recurrent_state(i, state_idx=0).clone() for i in range(2)]
    stepped = torch.cat(steps, dim=1)
    gap = (stepped - full.last_hidden_state).abs().max().item()
    assert gap < 1e-4, f"HF's cached decoding differs from its full forward by {gap}"
    tensors = {
        "ids": ids[0].to(torch.int64),
        "last_hidden_state": full.last_hidden_state[0],
        "stepped_hidden_state": stepped[0],
    }
    for i, h in enumerate(blocks):
        tensors[f"block{i}_out"] = h[0].clone()
    for i in range(2):
        tensors[f"ssm_state_prefill{i}"] = state_prefill[i][0]
        tensors[f"ssm_state_end{i}"] = state_end[i][0]
    save_file({k: v.contiguous() for k, v in tensors.items()}, out / "expected.safetensors")
    print(f"mamba2_tiny: HF stepped vs full max |Δ| {gap:.2e}; block outputs {len(blocks)}")


GRANITE_BASE = dict(
    vocab_size=64, hidden_size=32, num_attention_heads=4, shared_intermediate_size=48,
    num_local_experts=0, mamba_n_heads=4, mamba_d_state=8, mamba_expand=2, mamba_d_conv=4,
    rms_norm_eps=1e-6, embedding_multiplier=3.0, residual_multiplier=0.7, attention_multiplier=0.3,
    logits_scaling=2.5, pad_token_id=0, bos_token_id=1, eos_token_id=2,
)
GRANITE = {
    "granite_hybrid_rope": dict(
        GRANITE_BASE, num_hidden_layers=4, layer_types=["mamba", "attention", "mamba", "mamba"],
        num_key_value_heads=2, position_embedding_type="rope", tie_word_embeddings=False,
        mamba_n_groups=2, mamba_chunk_size=5, mamba_conv_bias=True,
    ),
    "granite_hybrid_nope": dict(
        GRANITE_BASE, num_hidden_layers=3, layer_types=["attention", "mamba", "mamba"],
        num_key_value_heads=4, position_embedding_type=None, tie_word_embeddings=True,
        mamba_n_groups=1, mamba_chunk_size=4, mamba_conv_bias=False,
    ),
}


def granite_case(name: str, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    model = GraniteMoeHybridForCausalLM(GraniteMoeHybridConfig(**GRANITE[name])).eval()
    randomise(model, gen)
    out = GOLDEN / name
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        model = GraniteMoeHybridForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        for f in ("config.json", "model.safetensors"):
            shutil.copy(Path(tmp) / f, out / f)
    ids = torch.randint(3, GRANITE[name]["vocab_size"], (1, SEQ), generator=gen)
    with torch.no_grad():
        full = model(input_ids=ids, use_cache=False).logits
        cache = DynamicCache(config=model.config)
        steps = [model(input_ids=ids[:, :PREFILL], cache=cache, use_cache=True).logits]
        for t in range(PREFILL, SEQ):
            steps.append(model(input_ids=ids[:, t:t + 1], cache=cache, use_cache=True).logits)
    stepped = torch.cat(steps, dim=1)
    gap = (stepped - full).abs().max().item()
    assert gap < 1e-4, f"HF's cached decoding differs from its full forward by {gap}"
    save_file({"ids": ids[0].to(torch.int64), "logits": full[0].contiguous(),
               "stepped_logits": stepped[0].contiguous()}, out / "expected.safetensors")
    print(f"{name}: HF stepped vs full max |Δ| {gap:.2e}; logits max |x| {full.abs().max().item():.2f}")


def delta_case() -> None:
    gen = torch.Generator().manual_seed(2302)
    b, t, h, dk, dv = 2, 19, 2, 8, 6
    q = torch.randn(b, t, h, dk, generator=gen)
    k = torch.randn(b, t, h, dk, generator=gen)
    v = torch.randn(b, t, h, dv, generator=gen)
    g = -0.6 * torch.rand(b, t, h, generator=gen)  # α in (0.55, 1]
    beta = torch.sigmoid(2.0 * torch.randn(b, t, h, generator=gen))
    s0 = 0.3 * torch.randn(b, h, dk, dv, generator=gen)
    o, s = torch_recurrent_gated_delta_rule(q, k, v, g, beta, initial_state=s0, output_final_state=True,
                                            use_qk_l2norm_in_kernel=True)
    oc, sc = torch_chunk_gated_delta_rule(q, k, v, g, beta, chunk_size=8, initial_state=s0,
                                          output_final_state=True, use_qk_l2norm_in_kernel=True)
    gap = max((o - oc).abs().max().item(), (s - sc).abs().max().item())
    assert gap < 1e-5, f"HF's chunked and recurrent gated delta rule differ by {gap}"
    out = GOLDEN / "gated_delta_rule"
    out.mkdir(parents=True, exist_ok=True)
    save_file({"q": q, "k": k, "v": v, "g": g, "beta": beta, "initial_state": s0,
               "o": o.contiguous(), "final_state": s.contiguous()}, out / "expected.safetensors")
    print(f"gated_delta_rule: HF chunked vs recurrent max |Δ| {gap:.2e}")


if __name__ == "__main__":
    mamba2_case()
    delta_case()
    granite_case("granite_hybrid_rope", 2303)
    granite_case("granite_hybrid_nope", 2304)
