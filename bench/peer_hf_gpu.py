#!/usr/bin/env python3
"""GPU peer for sealkit's CUDA benchmarks: Hugging Face transformers + PEFT doing the same work.

The model is LlamaForCausalLM(LlamaConfig(**config)) from a config.json object (--config PATH),
randomly initialised, bfloat16 weights, on cuda. Nothing here is sealkit code.

  train   LoRA SFT steps: PEFT LoraConfig(r=16, lora_alpha=32, lora_dropout=0, all seven
          projections q,k,v,o,gate,up,down), batch x seq random tokens, labels = input_ids
          (transformers shifts them: loss on every next-token target), loss.backward(),
          clip_grad_norm_(1.0), torch.optim.AdamW (weight decay 0) on the trainable parameters.
          Modes (--train-modes): ATTN[+autocast], ATTN in sdpa|eager|flash_attention_2. "+autocast"
          wraps forward + loss in torch.autocast("cuda", bfloat16) as Trainer(bf16=True) does;
          without it the LoRA path runs in the adapters' own dtype (PEFT keeps adapters in float32
          on a bf16 base by default). tokens/s = batch*seq / median step time.
  decode  model.generate(do_sample=False, use_cache=True, min_new_tokens=max_new_tokens=NEW) on
          batch B of PROMPT-token random prompts (sdpa, no adapter; for batch 1 also with the
          LoRA adapter attached). Decode time = median(generate NEW) - median(generate 1), so
          tokens/s = B*(NEW-1) / that, the tokens after the first, as the engine counts them.

Progress goes to stderr; the last stdout line is one JSON object.
"""
import argparse
import json
import statistics
import sys
import time

import torch

DEV = "cuda"
PROJ = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def build(raw, attn):
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(**raw)
    torch.manual_seed(0)
    with torch.device(DEV):
        try:
            model = LlamaForCausalLM._from_config(cfg, torch_dtype=torch.bfloat16, attn_implementation=attn)
        except TypeError:
            model = LlamaForCausalLM._from_config(cfg, dtype=torch.bfloat16, attn_implementation=attn)
    if model.dtype != torch.bfloat16:
        model = model.to(torch.bfloat16)
    got = getattr(model.config, "_attn_implementation", attn)
    if got != attn:
        raise RuntimeError(f"asked for attn_implementation={attn}, got {got}")
    return model


def add_lora(model):
    from peft import LoraConfig, get_peft_model
    lc = LoraConfig(r=16, lora_alpha=32, target_modules=PROJ, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
    pm = get_peft_model(model, lc)
    # B starts at zero; perturb it so every adapter gets real gradients (as the engine's bench does).
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 1e-3)
    return pm


def sync_time():
    if DEV == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def bench_train(raw, mode, batch, seq, warmup, repeats):
    attn, _, ac = mode.partition("+")
    autocast = ac == "autocast"
    model = build(raw, attn)
    pm = add_lora(model)
    pm.train()
    params = [p for p in pm.parameters() if p.requires_grad]
    lora_dtype = str(params[0].dtype)
    n_train = sum(p.numel() for p in params)
    try:
        opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0, fused=True)
    except Exception:  # noqa: BLE001
        opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    g = torch.Generator(device=DEV).manual_seed(42)
    ids = torch.randint(0, int(raw["vocab_size"]), (batch, seq), device=DEV, generator=g)
    times = []
    losses = []
    for i in range(warmup + repeats):
        t0 = sync_time()
        with torch.autocast(DEV, dtype=torch.bfloat16, enabled=autocast):
            out = pm(input_ids=ids, labels=ids)
        loss = out.loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        t1 = sync_time()
        losses.append(float(loss.detach()))
        del out, loss
        if i >= warmup:
            times.append((t1 - t0) * 1000)
    peak_mem = torch.cuda.max_memory_allocated() if DEV == "cuda" else 0
    med = statistics.median(times)
    res = {
        "mode": mode, "attn": attn, "autocast": autocast, "lora_dtype": lora_dtype, "trainable_params": n_train,
        "batch": batch, "seq": seq, "tokens_per_s": batch * seq / (med / 1000), "step_ms_median": med,
        "step_ms_all": times, "loss_first": losses[0], "loss_last": losses[-1], "peak_mem_gib": peak_mem / 2**30,
    }
    del opt, pm, model, params
    if DEV == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return res


def bench_decode(model, raw, batch, prompt, new, warmup, repeats, label):
    g = torch.Generator(device=DEV).manual_seed(7)
    ids = torch.randint(0, int(raw["vocab_size"]), (batch, prompt), device=DEV, generator=g)
    mask = torch.ones_like(ids)

    def gen(n):
        t0 = sync_time()
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                                 do_sample=False, use_cache=True, pad_token_id=0)
        t1 = sync_time()
        got = out.shape[1] - prompt
        if got != n:
            raise RuntimeError(f"generate produced {got} new tokens, expected {n}")
        return (t1 - t0) * 1000

    for _ in range(warmup):
        gen(1)
        gen(new)
    t1s, tns = [], []
    for _ in range(repeats):
        t1s.append(gen(1))
        tns.append(gen(new))
    pre = statistics.median(t1s)
    full = statistics.median(tns)
    dec = full - pre
    return {
        "label": label, "batch": batch, "prompt": prompt, "new": new,
        "tokens_per_s": batch * (new - 1) / (dec / 1000), "decode_ms": dec, "ms_per_step": dec / (new - 1),
        "prefill_ms_median": pre, "generate_ms_median": full, "gen1_ms_all": t1s, "gen_ms_all": tns,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--work", default="all", choices=["train", "decode", "all"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--train-modes", default="sdpa+autocast,sdpa,eager+autocast,flash_attention_2+autocast")
    ap.add_argument("--gen-batches", default="1,32")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--lora-decode", type=int, default=1, help="also decode with the LoRA adapter attached at batch 1")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--decode-warmup", type=int, default=1)
    ap.add_argument("--decode-repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda", help="cpu only for a smoke test of this script")
    a = ap.parse_args()
    global DEV
    DEV = a.device
    with open(a.config) as f:
        raw = json.load(f)

    import transformers
    import peft
    res = {
        "peer": "hf-transformers+peft", "gpu": torch.cuda.get_device_name(0) if DEV == "cuda" else "cpu", "torch": torch.__version__,
        "transformers": transformers.__version__, "peft": peft.__version__, "cuda": torch.version.cuda, "device": DEV,
        "train": {}, "train_errors": {}, "decode": {}, "decode_errors": {},
    }
    torch.backends.cuda.matmul.allow_tf32 = True

    if a.work in ("train", "all"):
        for mode in [m for m in a.train_modes.split(",") if m]:
            try:
                r = bench_train(raw, mode, a.batch, a.seq, a.warmup, a.repeats)
                res["train"][mode] = r
                log(f"train {mode}: {r['tokens_per_s']:.0f} tokens/s, step {r['step_ms_median']:.1f} ms "
                    f"(lora {r['lora_dtype']}, loss {r['loss_first']:.3f}->{r['loss_last']:.3f}, {r['peak_mem_gib']:.1f} GiB)")
            except Exception as e:  # noqa: BLE001
                res["train_errors"][mode] = f"{type(e).__name__}: {str(e)[:300]}"
                log(f"train {mode}: FAILED {res['train_errors'][mode]}")
                if DEV == "cuda":
                    torch.cuda.empty_cache()
        if res["train"]:
            best = max(res["train"].values(), key=lambda r: r["tokens_per_s"])
            res["train_best"] = best["mode"]

    if a.work in ("decode", "all"):
        model = build(raw, "sdpa")
        model.eval()
        for b in [int(x) for x in a.gen_batches.split(",") if x]:
            label = f"b{b}"
            try:
                r = bench_decode(model, raw, b, a.prompt, a.new, a.decode_warmup, a.decode_repeats, label)
                res["decode"][label] = r
                log(f"decode {label}: {r['tokens_per_s']:.1f} tokens/s ({r['ms_per_step']:.2f} ms/step, prefill {r['prefill_ms_median']:.1f} ms)")
            except Exception as e:  # noqa: BLE001
                res["decode_errors"][label] = f"{type(e).__name__}: {str(e)[:300]}"
                log(f"decode {label}: FAILED {res['decode_errors'][label]}")
        if a.lora_decode:
            label = "b1+lora"
            try:
                pm = add_lora(model)
                pm.eval()
                r = bench_decode(pm, raw, 1, a.prompt, a.new, a.decode_warmup, a.decode_repeats, label)
                res["decode"][label] = r
                log(f"decode {label}: {r['tokens_per_s']:.1f} tokens/s ({r['ms_per_step']:.2f} ms/step, prefill {r['prefill_ms_median']:.1f} ms)")
            except Exception as e:  # noqa: BLE001
                res["decode_errors"][label] = f"{type(e).__name__}: {str(e)[:300]}"
                log(f"decode {label}: FAILED {res['decode_errors'][label]}")

    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
