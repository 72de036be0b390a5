#!/usr/bin/env python3
"""The strongest plain-PyTorch decode peer for `tritter bench decode --device cuda`: a hand-written
2B4T-shaped dense bf16 decoder (hidden 2560, 30 layers, 20/5 heads of 128, FFN 6912 with
squared-ReLU gating, vocab 128256, tied head; random weights) with a static KV cache, one
decode step captured in a CUDA graph and replayed. Greedy sampling stays on the device (the next
token and position are written in place), so the host never waits inside the loop.

Measured like Tritter's decode benchmark: a 512-token prompt prefilled (timed on its own), then
128 new tokens, timed without the prefill; eager steps are timed too. Hugging Face `generate`
on the same machine is host-bound (13.7 tokens/s eager); this loop is what PyTorch reaches
without it. Prints one JSON object per measurement.

Usage: python3 scripts/torch_decode_peer.py [--prompt 512] [--new 128] [--layers 30] [--device cpu]
Needs torch with CUDA; nothing else.
"""

import argparse
import json
import sys
import time


def emit(d):
    print(json.dumps(d), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--device", default="cuda", help="cpu: a smoke test of the eager path only")
    a = ap.parse_args()
    try:
        import torch
        import torch.nn.functional as F
    except Exception as e:  # noqa: BLE001 - reported, not hidden
        emit({"what": "torch_decode", "error": "no torch: %r" % (e,)})
        return 1
    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        emit({"what": "torch_decode", "error": "torch sees no CUDA device"})
        return 1
    dt = torch.bfloat16
    C, H, KV, D, FF, V, L = 2560, 20, 5, 128, 6912, 128256, a.layers
    T = a.prompt + a.new + 8
    eps, theta = 1e-5, 500000.0
    torch.manual_seed(0)

    def w(*shape):
        return (torch.randn(*shape, device=dev, dtype=dt) * 0.02).contiguous()

    layers = []
    for _ in range(L):
        layers.append(
            {
                "n1": torch.ones(C, device=dev, dtype=dt),
                "n2": torch.ones(C, device=dev, dtype=dt),
                "qkv": w((H + 2 * KV) * D, C),
                "o": w(C, H * D),
                "gu": w(2 * FF, C),
                "down": w(C, FF),
            }
        )
    emb = w(V, C)
    norm = torch.ones(C, device=dev, dtype=dt)
    kc = torch.zeros(L, 1, KV, T, D, device=dev, dtype=dt)
    vc = torch.zeros(L, 1, KV, T, D, device=dev, dtype=dt)
    inv = 1.0 / theta ** (torch.arange(0, D, 2, device=dev, dtype=torch.float32) / D)
    ang = torch.arange(T, device=dev, dtype=torch.float32)[:, None] * inv[None, :]
    cos = torch.cat([ang.cos(), ang.cos()], -1).to(dt)  # [T, D]
    sin = torch.cat([ang.sin(), ang.sin()], -1).to(dt)
    slots = torch.arange(T, device=dev)

    def rms(x, g):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(dt) * g

    def rope(x, c, s):  # x [1, heads, t, D]; c, s [t, D]
        x1, x2 = x[..., : D // 2], x[..., D // 2 :]
        return x * c + torch.cat([-x2, x1], -1) * s

    def forward(ids, pos):
        """ids [t] at positions pos [t] (device tensors); returns the last row's logits."""
        t = ids.shape[0]
        x = emb[ids][None]  # [1, t, C]
        c, s = cos[pos], sin[pos]
        # Keys at or before each query's position (a static-shape mask over the whole cache).
        mask = (slots[None, :] <= pos[:, None])[None, None]  # [1, 1, t, T]
        for i, l in enumerate(layers):
            h = rms(x, l["n1"])
            qkv = h @ l["qkv"].t()
            q, k, v = qkv.split([H * D, KV * D, KV * D], -1)
            q = rope(q.view(1, t, H, D).transpose(1, 2), c, s)
            k = rope(k.view(1, t, KV, D).transpose(1, 2), c, s)
            v = v.view(1, t, KV, D).transpose(1, 2)
            kc[i].index_copy_(2, pos, k)
            vc[i].index_copy_(2, pos, v)
            att = F.scaled_dot_product_attention(q, kc[i], vc[i], attn_mask=mask, enable_gqa=True)
            x = x + att.transpose(1, 2).reshape(1, t, H * D) @ l["o"].t()
            h = rms(x, l["n2"])
            g, u = (h @ l["gu"].t()).split([FF, FF], -1)
            x = x + (F.relu(g).square() * u) @ l["down"].t()
        return rms(x[:, -1], norm) @ emb.t()  # [1, V]

    tok = torch.zeros(1, dtype=torch.long, device=dev)
    pos = torch.zeros(1, dtype=torch.long, device=dev)

    def step():
        logits = forward(tok, pos)
        tok.copy_(logits.argmax(-1))
        pos.add_(1)

    prompt = torch.randint(0, V, (a.prompt,), device=dev)
    cuda = dev.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    with torch.inference_mode():
        # Prefill (eager), then decode steps eager, then the step captured once and replayed;
        # every run starts from the prompt's greedy token, so eager and graph runs should end
        # on the same token.
        pre = []
        for _ in range(a.reps):
            sync()
            t0 = time.perf_counter()
            logits = forward(prompt, slots[: a.prompt])
            sync()
            pre.append(time.perf_counter() - t0)
        first = logits.argmax(-1)

        def restart():
            tok.copy_(first)
            pos.fill_(a.prompt)

        restart()
        for _ in range(3):
            step()
        restart()
        sync()
        t0 = time.perf_counter()
        for _ in range(a.new):
            step()
        sync()
        eager = a.new / (time.perf_counter() - t0)
        last_eager = int(tok.item())
        emit({"what": "torch_decode", "mode": "eager", "prompt": a.prompt, "new": a.new,
              "prefill_tokens_per_s": a.prompt / sorted(pre)[len(pre) // 2], "tokens_per_s": eager,
              "device": str(dev)})
        if not cuda:
            return 0
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                restart()
                step()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        restart()
        with torch.cuda.graph(g):
            step()
        rates = []
        for _ in range(a.reps):
            restart()
            sync()
            t0 = time.perf_counter()
            for _ in range(a.new):
                g.replay()
            sync()
            rates.append(a.new / (time.perf_counter() - t0))
        weights = sum(p.numel() for l in layers for p in l.values()) + emb.numel()
        emit({"what": "torch_decode", "mode": "cuda_graph", "prompt": a.prompt, "new": a.new,
              "tokens_per_s": sorted(rates)[len(rates) // 2], "tokens_per_s_runs": rates,
              "weight_bytes": 2 * weights, "torch": torch.__version__,
              "device": torch.cuda.get_device_name(0), "end_position": int(pos.item()),
              "last_token_matches_eager": int(tok.item()) == last_eager})
    return 0


if __name__ == "__main__":
    sys.exit(main())
