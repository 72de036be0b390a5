#!/usr/bin/env python3
"""Training throughput of the same architecture in PyTorch (CPU), for docs/TRAINING.md.

Builds `tritter-tiny` (or the given sizes) as Hugging Face `BitNetForCausalLM` with the
`autobitlinear` / `online` quantization config — float32 latent weights, absmean ternary weights and
int8 activations with the straight-through estimator, i.e. the same computation as
`tritter --train` with `qat.mode = "ternary"` — and times AdamW steps on random token ids with the
same batch size and sequence length. Prints tokens/s (median over the timed steps).

Needs torch and transformers (see scripts/requirements-golden.txt):
    python scripts/torch_train_bench.py --batch 8 --seq 256 --steps 8
"""
import argparse
import json
import statistics
import tempfile
import time

import torch
from safetensors.torch import save_file
from transformers import BitNetConfig, BitNetForCausalLM


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, default=8014)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--ffn", type=int, default=688)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=8, help="timed steps (after 2 warm-up steps)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--fp", action="store_true", help="plain float linear layers (no quantization)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    q = None if a.fp else {"quant_method": "bitnet", "linear_class": "autobitlinear",
                          "quantization_mode": "online"}
    cfg = BitNetConfig(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.ffn,
                       num_hidden_layers=a.layers, num_attention_heads=a.heads,
                       num_key_value_heads=a.kv_heads, tie_word_embeddings=True,
                       max_position_embeddings=max(1024, a.seq), bos_token_id=1, eos_token_id=2,
                       quantization_config=q)
    cfg.architectures = ["BitNetForCausalLM"]
    if q is None:
        model = BitNetForCausalLM(cfg)
    else:
        # The quantized linear class is installed by from_pretrained: write a random checkpoint.
        plain = BitNetConfig(**{**cfg.to_dict(), "quantization_config": None})
        base = BitNetForCausalLM(plain)
        with tempfile.TemporaryDirectory() as d:
            sd = {k: v.contiguous() for k, v in base.state_dict().items() if k != "lm_head.weight"}
            save_file(sd, f"{d}/model.safetensors", metadata={"format": "pt"})
            cfg.dtype = "float32"
            cfg.save_pretrained(d)
            model = BitNetForCausalLM.from_pretrained(d, dtype=torch.float32,
                                                      attn_implementation="eager")
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), eps=1e-8,
                            weight_decay=0.1)
    ids = torch.randint(0, a.vocab, (a.batch, a.seq))
    times = []
    for step in range(a.steps + 2):
        t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step >= 2:
            times.append(time.perf_counter() - t0)
    tok = a.batch * a.seq
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                      "quantized": q is not None, "batch": a.batch, "seq": a.seq,
                      "median_step_s": statistics.median(times),
                      "tokens_per_s": tok / statistics.median(times), "loss": float(loss)}))


if __name__ == "__main__":
    main()
