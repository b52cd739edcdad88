#!/usr/bin/python3
"""PyTorch peer for sealkit's benchmarks: the same Llama-family model in plain PyTorch.

Its own implementation (no transformers): RMSNorm, rotate-half RoPE (default, linear and llama3
scaling), grouped-query attention (matmul + causal mask + softmax; torch 1.13 has no
scaled_dot_product_attention), SwiGLU MLP, tied or untied LM head, q/k/v bias for qwen2. LoRA
(r=16, alpha=32) on q,k,v,o,gate,up,down with the base frozen; A kaiming-uniform, B zero then
perturbed so every adapter gets gradients.

  train    forward + cross-entropy on every next-token target + backward + grad-norm clip (1.0)
           + AdamW step (weight decay 0) on the LoRA parameters only. --adapters N: N adapters
           on one set of frozen weights, each with its own optimiser and its own --batch
           sequences, trained one after another (PEFT trains one adapter per step); a timed
           step is one step of every adapter, N * batch * seq tokens (SEAL's inner loop, which
           the engine runs as one batch mixing the adapters)
  forward  inference-mode forward computing every token's log-probability of the next token
  decode   greedy KV-cache generation, as `seal bench decode`: --batch prompts of --prompt random
           tokens are prefilled together (the first new token is the argmax at the last prompt
           position), then --new - 1 further tokens are produced one step at a time, each step
           feeding the previous token of every sequence through the model with a per-layer K/V
           cache (preallocated, appended in place). tokens_per_s = batch * (new - 1) / the time
           from the first token to the last (prefill excluded, timed separately).

dtype modes:
  fp32            everything float32
  bf16-autocast   float32 weights, torch.autocast("cpu", bfloat16) around the forward (+ loss)
  bf16-weights    the whole model (adapters too) cast to bfloat16; norms, softmax and the loss in
                  float32 as transformers does (decode: the K/V cache is bfloat16 too)

Config: a Hugging Face config.json object, read from --config PATH (or "-" for stdin). Weights
and tokens are random. Prints progress on stderr and one JSON object as the last stdout line.

Run it with the tuned environment (see bench/README.md): tcmalloc via LD_PRELOAD with
TCMALLOC_RELEASE_RATE=0, openblas-openmp on LD_LIBRARY_PATH, OPENBLAS_CORETYPE=SkylakeX.
"""
import argparse
import copy
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


# ----------------------------------------------------------------------------- configuration

class Cfg:
    def __init__(self, raw):
        self.arch = raw.get("model_type", "llama")
        self.vocab = int(raw["vocab_size"])
        self.hidden = int(raw["hidden_size"])
        self.inter = int(raw["intermediate_size"])
        self.layers = int(raw["num_hidden_layers"])
        self.heads = int(raw["num_attention_heads"])
        kv = raw.get("num_key_value_heads")
        self.kv_heads = int(kv) if kv else self.heads
        hd = raw.get("head_dim")
        self.head_dim = int(hd) if hd else self.hidden // self.heads
        self.eps = float(raw.get("rms_norm_eps", 1e-6))
        rope = raw.get("rope_parameters") or {}
        self.rope_theta = float(raw.get("rope_theta", rope.get("rope_theta", 10000.0)))
        scaling = raw.get("rope_scaling") or (rope if rope.get("rope_type", "default") != "default" else None)
        self.rope_scaling = scaling
        self.tied = bool(raw.get("tie_word_embeddings", False))
        self.qkv_bias = self.arch == "qwen2" or bool(raw.get("attention_bias", False))
        if self.heads % self.kv_heads:
            raise SystemExit(f"num_attention_heads {self.heads} is not a multiple of num_key_value_heads {self.kv_heads}")


def rope_inv_freq(cfg):
    d = cfg.head_dim
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    s = cfg.rope_scaling
    if not s:
        return inv.float()
    kind = s.get("rope_type", s.get("type", "default"))
    if kind == "linear":
        return (inv / float(s["factor"])).float()
    if kind == "llama3":
        factor = float(s["factor"])
        lo, hi = float(s["low_freq_factor"]), float(s["high_freq_factor"])
        old = float(s["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv
        lo_wl, hi_wl = old / lo, old / hi
        scaled = torch.where(wavelen > lo_wl, inv / factor, inv)
        smooth = (old / wavelen - lo) / (hi - lo)
        mid = (1 - smooth) * scaled / factor + smooth * scaled
        is_mid = (wavelen >= hi_wl) & (wavelen <= lo_wl)
        return torch.where(is_mid, mid, scaled).float()
    if kind == "default":
        return inv.float()
    raise SystemExit(f"rope scaling type {kind!r} is not implemented by the peer")


# ----------------------------------------------------------------------------- model

class LoraLinear(nn.Module):
    """y = x W^T (+ b) + (alpha / r) * (x A^T) B^T; W (and b) frozen."""

    def __init__(self, d_in, d_out, rank, alpha, bias=False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(d_out, d_in).normal_(0.0, 0.02), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(d_out), requires_grad=False) if bias else None
        self.rank = rank
        if rank > 0:
            self.lora_A = nn.Parameter(torch.empty(rank, d_in))
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
            # PEFT starts B at zero; perturb it so A receives gradients from the first step.
            self.lora_B = nn.Parameter(torch.zeros(d_out, rank).normal_(0.0, 1e-3))
            self.scale = alpha / rank

    def forward(self, x):
        y = F.linear(x, self.weight, self.bias)
        if self.rank > 0:
            y = y + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scale
        return y


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d), requires_grad=False)
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(dtype)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Block(nn.Module):
    def __init__(self, cfg, rank, alpha):
        super().__init__()
        H, hd = cfg.hidden, cfg.head_dim
        self.cfg = cfg
        self.input_norm = RMSNorm(H, cfg.eps)
        self.q = LoraLinear(H, cfg.heads * hd, rank, alpha, cfg.qkv_bias)
        self.k = LoraLinear(H, cfg.kv_heads * hd, rank, alpha, cfg.qkv_bias)
        self.v = LoraLinear(H, cfg.kv_heads * hd, rank, alpha, cfg.qkv_bias)
        self.o = LoraLinear(cfg.heads * hd, H, rank, alpha)
        self.post_norm = RMSNorm(H, cfg.eps)
        self.gate = LoraLinear(H, cfg.inter, rank, alpha)
        self.up = LoraLinear(H, cfg.inter, rank, alpha)
        self.down = LoraLinear(cfg.inter, H, rank, alpha)

    def rotated_qkv(self, x, cos, sin):
        """Normed input projected to q (B, nh, T, hd; scaled by 1/sqrt(hd), folded into its
        rotation), k and v (B, nkv, T, hd), with RoPE applied to q and k."""
        cfg = self.cfg
        B, T, _ = x.shape
        nh, nkv, hd = cfg.heads, cfg.kv_heads, cfg.head_dim
        h = self.input_norm(x)
        q = self.q(h).view(B, T, nh, hd).transpose(1, 2)
        k = self.k(h).view(B, T, nkv, hd).transpose(1, 2)
        v = self.v(h).view(B, T, nkv, hd).transpose(1, 2)
        cos, sin = cos.to(v.dtype), sin.to(v.dtype)
        scale = 1.0 / math.sqrt(hd)
        q = q * (cos * scale) + rotate_half(q) * (sin * scale)
        k = k * cos + rotate_half(k) * sin
        return q, k, v

    def forward(self, x, cos, sin, mask):
        cfg = self.cfg
        B, T, _ = x.shape
        nh, nkv, hd = cfg.heads, cfg.kv_heads, cfg.head_dim
        g = nh // nkv
        q, k, v = self.rotated_qkv(x, cos, sin)
        # GQA without repeating K/V: the g query heads sharing a KV head are stacked along rows,
        # so each KV group is one (g*T x hd) @ (hd x T) GEMM.
        q = q.reshape(B, nkv, g * T, hd)
        s = torch.matmul(q, k.transpose(-1, -2)).view(B, nkv, g, T, T)
        p = torch.softmax(s.float() + mask, dim=-1).to(v.dtype)
        a = torch.matmul(p.view(B, nkv, g * T, T), v)      # B, nkv, g*T, hd
        a = a.view(B, nh, T, hd).transpose(1, 2).reshape(B, T, nh * hd)
        x = x + self.o(a)
        h = self.post_norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))

    def forward_cached(self, x, cos, sin, mask, cache, pos):
        """x holds T new tokens at positions pos..pos+T-1 (prefill: pos 0 and the causal mask;
        decode: T = 1, mask None). Their K/V are written into cache = [K, V, max_len] (K and V:
        B, nkv, max_len, hd, allocated on first use) and the new queries attend over
        cache[:, :, :pos+T]."""
        cfg = self.cfg
        B, T, _ = x.shape
        nh, nkv, hd = cfg.heads, cfg.kv_heads, cfg.head_dim
        g = nh // nkv
        q, k, v = self.rotated_qkv(x, cos, sin)
        if cache[0] is None:
            cache[0] = torch.empty(B, nkv, cache[2], hd, dtype=k.dtype)
            cache[1] = torch.empty(B, nkv, cache[2], hd, dtype=v.dtype)
        L = pos + T
        cache[0][:, :, pos:L] = k
        cache[1][:, :, pos:L] = v
        keys, vals = cache[0][:, :, :L], cache[1][:, :, :L]
        q = q.reshape(B, nkv, g * T, hd)
        s = torch.matmul(q, keys.transpose(-1, -2)).float()  # B, nkv, g*T, L
        if mask is not None:
            s = s.view(B, nkv, g, T, L) + mask
        p = torch.softmax(s, dim=-1).to(vals.dtype)
        a = torch.matmul(p.view(B, nkv, g * T, L), vals)     # B, nkv, g*T, hd
        a = a.view(B, nh, T, hd).transpose(1, 2).reshape(B, T, nh * hd)
        x = x + self.o(a)
        h = self.post_norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Llama(nn.Module):
    def __init__(self, cfg, rank=16, alpha=32.0):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Parameter(torch.empty(cfg.vocab, cfg.hidden).normal_(0.0, 0.02), requires_grad=False)
        self.blocks = nn.ModuleList(Block(cfg, rank, alpha) for _ in range(cfg.layers))
        self.norm = RMSNorm(cfg.hidden, cfg.eps)
        self.head = None if cfg.tied else nn.Parameter(torch.empty(cfg.vocab, cfg.hidden).normal_(0.0, 0.02), requires_grad=False)
        self.register_buffer("inv_freq", rope_inv_freq(cfg), persistent=False)
        self._tables = {}

    def tables(self, T):
        """cos/sin (T, hd) and the additive causal mask (T, T), cached per length."""
        if T not in self._tables:
            pos = torch.arange(T, dtype=torch.float32)
            f = torch.outer(pos, self.inv_freq)
            emb = torch.cat((f, f), dim=-1)
            mask = torch.full((T, T), float("-inf")).triu_(1)
            self._tables[T] = (emb.cos(), emb.sin(), mask)
        return self._tables[T]

    def forward(self, tokens):
        cos, sin, mask = self.tables(tokens.shape[1])
        x = F.embedding(tokens, self.embed)
        for blk in self.blocks:
            x = blk(x, cos, sin, mask)
        x = self.norm(x)
        return F.linear(x, self.embed if self.head is None else self.head)

    def new_cache(self, max_len):
        """One [K, V, max_len] per layer; K and V are allocated by the first forward_cached."""
        return [[None, None, max_len] for _ in self.blocks]

    def forward_cached(self, tokens, cache, pos):
        """Logits of the last position only, after running tokens (B, T) at positions
        pos..pos+T-1 through the cache."""
        T = tokens.shape[1]
        cos, sin, mask = self.tables(cache[0][2])
        cos, sin = cos[pos:pos + T], sin[pos:pos + T]
        mask = mask[:T, :T] if T > 1 else None  # prefill starts at 0: causal; one new token sees everything
        if T > 1 and pos != 0:
            raise ValueError("multi-token cached forward is only implemented from position 0")
        x = F.embedding(tokens, self.embed)
        for blk, c in zip(self.blocks, cache):
            x = blk.forward_cached(x, cos, sin, mask, c, pos)
        x = self.norm(x[:, -1])
        return F.linear(x, self.embed if self.head is None else self.head)  # B, vocab


# ----------------------------------------------------------------------------- benchmark

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, help="config.json path, or - for stdin")
    ap.add_argument("--work", choices=["train", "forward", "decode"], required=True)
    ap.add_argument("--dtype", choices=["fp32", "bf16-autocast", "bf16-weights"], default="fp32")
    ap.add_argument("--batch", type=int, default=4, help="sequences per step (decode: prompts decoded together)")
    ap.add_argument("--seq", type=int, default=256, help="train/forward: tokens per sequence")
    ap.add_argument("--prompt", type=int, default=128, help="decode: random prompt tokens per sequence")
    ap.add_argument("--new", type=int, default=128, help="decode: tokens generated per sequence (>= 2)")
    ap.add_argument("--temperature", type=float, default=0.0,
                    help="decode: 0 = greedy; > 0 samples at this temperature (with --top-p)")
    ap.add_argument("--top-p", type=float, default=1.0, help="decode, sampling: nucleus mass kept")
    ap.add_argument("--check", action="store_true",
                    help="decode: afterwards, check the KV-cache path against full forwards (logits per position)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--alpha", type=float, default=32.0)
    ap.add_argument("--adapters", type=int, default=1, help="train: adapters trained in turn, --batch sequences each")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--name", default=None, help="label echoed in the JSON (e.g. the preset)")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args()

    raw = json.load(sys.stdin if a.config == "-" else open(a.config))
    cfg = Cfg(raw)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)

    if a.work == "decode":
        return decode(a, cfg)

    train = a.work == "train"
    t_build = time.perf_counter()
    model = Llama(cfg, rank=a.rank if train else 0, alpha=a.alpha)
    if a.dtype == "bf16-weights":
        model = model.to(torch.bfloat16)
    assert all(p.requires_grad == ("lora_" in n) for n, p in model.named_parameters())
    if a.adapters < 1 or (a.adapters > 1 and not train):
        raise SystemExit("--adapters must be >= 1, and above 1 only for train")
    models = adapter_copies(model, a.adapters)
    build_s = time.perf_counter() - t_build

    gen = torch.Generator().manual_seed(42)
    tokens = torch.randint(cfg.vocab, (a.adapters * a.batch, a.seq), generator=gen)
    inputs, targets = tokens, torch.roll(tokens, -1, dims=1)  # last position predicts a wrapped token:
    # every position carries a loss, as in the engine's bench (batch * seq tokens per step).

    autocast = a.dtype == "bf16-autocast"

    def run_forward(m, x):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return m(x)

    if train:
        trainers = []
        for i, m in enumerate(models):
            m.train()
            lora = [p for n, p in m.named_parameters() if "lora_" in n]
            opt = torch.optim.AdamW(lora, lr=a.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, foreach=True)
            rows = slice(i * a.batch, (i + 1) * a.batch)
            trainers.append((m, lora, opt, inputs[rows], targets[rows]))

        def step():
            losses = []
            for m, lora, opt, x, y in trainers:
                logits = run_forward(m, x)
                loss = F.cross_entropy(logits.float().view(-1, cfg.vocab), y.reshape(-1))
                loss.backward()
                torch.nn.utils.clip_grad_norm_(lora, 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
                losses.append(loss.item())
            return sum(losses) / len(losses)
    else:
        model.eval()

        def step():
            with torch.inference_mode():
                logits = run_forward(model, inputs)
                lp = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
                return lp.mean().item()

    times, last = [], None
    total = a.warmup + a.repeats
    for i in range(total):
        t0 = time.perf_counter()
        last = step()
        ms = (time.perf_counter() - t0) * 1e3
        if i >= a.warmup:
            times.append(ms)
        if not a.quiet:
            print(f"  {a.work} {a.dtype} step {i + 1}/{total}: {ms:.1f} ms (value {last:.4f})", file=sys.stderr)
        if not math.isfinite(last):
            raise SystemExit(f"non-finite loss/log-prob {last}")

    med = statistics.median(times)
    out = {
        "peer": "pytorch", "torch": torch.__version__, "mode": a.dtype, "work": a.work, "name": a.name,
        "batch": a.adapters * a.batch, "seq": a.seq, "adapters": a.adapters, "threads": torch.get_num_threads(),
        "tokens_per_s": a.adapters * a.batch * a.seq / (med / 1e3), "step_ms_median": med, "step_ms_all": times,
        "last_value": last, "build_s": build_s,
        "env": env_shown(),
    }
    print(json.dumps(out))


def adapter_copies(model, n):
    """model and n - 1 copies of it that share its frozen weights (the same Parameter objects),
    each with LoRA parameters of its own."""
    frozen = {name: p for name, p in model.named_parameters() if not p.requires_grad}
    out = [model]
    for _ in range(n - 1):
        m = copy.deepcopy(model)
        for name, p in list(m.named_parameters()):
            if not p.requires_grad:
                owner, _, attr = name.rpartition(".")
                setattr(m.get_submodule(owner) if owner else m, attr, frozen[name])
        out.append(m)
    return out


def env_shown():
    return {k: os.environ.get(k) for k in ("LD_PRELOAD", "TCMALLOC_RELEASE_RATE", "LD_LIBRARY_PATH", "OPENBLAS_CORETYPE", "OMP_NUM_THREADS")}


def decode(a, cfg):
    """`seal bench decode`'s work (lib/bench/engine-bench.ts runDecodeBench): every timed call is a
    whole generation, greedy or sampled; prefill = up to the first token, decode = first token to last."""
    if a.batch < 1 or a.prompt < 1 or a.new < 2:
        raise SystemExit("decode needs --batch >= 1, --prompt >= 1 and --new >= 2")
    t_build = time.perf_counter()
    model = Llama(cfg, rank=0, alpha=a.alpha)
    if a.dtype == "bf16-weights":
        model = model.to(torch.bfloat16)
    model.eval()
    build_s = time.perf_counter() - t_build
    B, P, N = a.batch, a.prompt, a.new
    prompts = torch.randint(cfg.vocab, (B, P), generator=torch.Generator().manual_seed(42))
    autocast = a.dtype == "bf16-autocast"
    max_len = P + N  # P + N - 1 positions are written: the last token is not fed back
    model.tables(max_len)  # RoPE/mask tables built once, outside the timing (the engine's are too)

    sampler = torch.Generator().manual_seed(7)

    def pick(logits):
        """Greedy, or what transformers' sampling does: logits / temperature, top-p by sorting the
        vocabulary and masking past the smallest prefix that reaches top_p, then multinomial."""
        if a.temperature <= 0:
            return logits.argmax(-1)
        x = logits.float() / a.temperature
        if a.top_p < 1:
            sx, idx = torch.sort(x, descending=True, dim=-1)
            p = sx.softmax(-1)
            drop = (p.cumsum(-1) - p) >= a.top_p  # tokens after the prefix that reached top_p
            x = torch.full_like(x, -math.inf).scatter(-1, idx, sx.masked_fill(drop, -math.inf))
        return torch.multinomial(x.softmax(-1), 1, generator=sampler).view(-1)

    def generate():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            cache = model.new_cache(max_len)
            t0 = time.perf_counter()
            logits = model.forward_cached(prompts, cache, 0)
            tok = pick(logits)  # (B,)
            t1 = time.perf_counter()
            out = [tok]
            for i in range(N - 1):
                logits = model.forward_cached(tok.view(B, 1), cache, P + i)
                tok = pick(logits)
                out.append(tok)
            t2 = time.perf_counter()
            last = logits.float().max().item()
        return (t1 - t0) * 1e3, (t2 - t1) * 1e3, torch.stack(out, 1), last

    prefill, dec, last, gen_tokens = [], [], None, None
    total = a.warmup + a.repeats
    for i in range(total):
        p_ms, d_ms, gen_tokens, last = generate()
        if i >= a.warmup:
            prefill.append(p_ms)
            dec.append(d_ms)
        if not a.quiet:
            print(f"  decode {a.dtype} run {i + 1}/{total}: prefill {p_ms:.1f} ms, {N - 1} steps {d_ms:.1f} ms "
                  f"({B * (N - 1) / (d_ms / 1e3):.1f} tokens/s)", file=sys.stderr)
        if not math.isfinite(last):
            raise SystemExit(f"non-finite logit {last}")

    check = None
    if a.check:
        # The cache against full (uncached) forwards: feed random continuation tokens (random
        # weights make greedy output repetitive) step by step through the cache and compare every
        # step's logits with the full forward's at the same position.
        cont = torch.randint(cfg.vocab, (B, N - 1), generator=torch.Generator().manual_seed(7))
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            cache = model.new_cache(max_len)
            steps = [model.forward_cached(prompts, cache, 0).float()]
            for i in range(N - 1):
                steps.append(model.forward_cached(cont[:, i:i + 1], cache, P + i).float())
            cached = torch.stack(steps, 1)                                   # B, N, vocab
            full = model(torch.cat((prompts, cont), 1))[:, P - 1:].float()  # B, N, vocab
        diff = (cached - full).abs().max().item()
        agree = (cached.argmax(-1) == full.argmax(-1)).float().mean().item()
        check = {"max_abs_logit_diff": diff, "logit_abs_max": full.abs().max().item(), "argmax_agreement": agree}
        print(f"  check: cached vs full forward over {N} positions: max |logit diff| {diff:.3g} "
              f"(logits up to {check['logit_abs_max']:.3g}), argmax agrees on {100 * agree:.1f}%", file=sys.stderr)

    med = statistics.median(dec)
    timed = B * (N - 1)
    out = {
        "peer": "pytorch", "torch": torch.__version__, "mode": a.dtype, "work": "decode", "name": a.name,
        "batch": B, "seq": P + N, "prompt": P, "new": N, "threads": torch.get_num_threads(),
        "tokens_per_s": timed / (med / 1e3), "step_ms_median": med / (N - 1), "step_ms_all": dec,
        "decode_ms_median": med, "prefill_ms_median": statistics.median(prefill), "prefill_ms_all": prefill,
        "tokens_timed": timed, "prefill_in_timing": False,
        "sampling": f"temperature {a.temperature:g}, top-p {a.top_p:g}" if a.temperature > 0 else "greedy",
        "timing": "tokens_per_s = batch*(new-1) / median(time from the first token to the last); step_ms_median = that time / (new-1)",
        "first_tokens": gen_tokens[0, :8].tolist(), "last_value": last, "check": check, "build_s": build_s,
        "env": env_shown(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
