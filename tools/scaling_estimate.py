#!/usr/bin/env python3
"""Step time and MFU of a PaLM training run on a GPU cluster, from kernel rates and link
bandwidths (docs/scaling.md explains every term). Plug in your own cluster's numbers.

usage: tools/scaling_estimate.py [--gpus N] [--tp T] [--peak FLOPS] [--kernel-eff E]
                                 [--nvlink BYTES_PER_S] [--net BYTES_PER_S] [--overlap F]
"""
import argparse

MODELS = {  # name: (parameters, layers, d_model, heads, head_dim, seq, global batch in sequences)
    "palm-8b": (8.63e9, 32, 4096, 16, 256, 2048, 1024),
    "palm-62b": (62.50e9, 64, 8192, 32, 256, 2048, 1024),
    "palm-540b": (540.35e9, 118, 18432, 48, 256, 2048, 2048),
}


def estimate(model, gpus, tp, peak, eff, nvlink, net, overlap, bytes_per=2):
    n, layers, d, h, k, t, batch = MODELS[model]
    tokens = batch * t
    flops_per_token = 6 * n + 12 * layers * h * k * t  # PaLM Appendix B
    dp = gpus // tp
    compute = flops_per_token * tokens / (gpus * peak * eff)
    # tensor parallel (PaLM's parallel block): one all-reduce of [tokens/dp, d] per layer
    # forward and one backward, ring over NVLink: 2 (t-1)/t x bytes / bandwidth
    act_bytes = tokens / dp * d * bytes_per
    tp_comm = 2 * layers * 2 * (tp - 1) / tp * act_bytes / nvlink if tp > 1 else 0.0
    # fully sharded data parallel over the network: all-gather the weights for the forward
    # and again for the backward, reduce-scatter the gradients: 3 x (d-1)/d x shard bytes
    shard = n / tp * bytes_per
    dp_comm = 3 * (dp - 1) / dp * shard / net
    # bucketed, non-blocking collectives hide behind at most `overlap` of the compute
    exposed = max(0.0, dp_comm - overlap * compute)
    step = compute + tp_comm + exposed
    mfu = flops_per_token * tokens / step / (gpus * peak)
    return dict(model=model, gpus=gpus, tp=tp, dp=dp, flops_per_token=flops_per_token, tokens=tokens,
                compute=compute, tp_comm=tp_comm, dp_comm=dp_comm, exposed=exposed, step=step, mfu=mfu,
                tokens_per_s=tokens / step)


def main():
    a = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a.add_argument("--gpus", type=int, nargs="*", default=None)
    a.add_argument("--tp", type=int, default=8)
    a.add_argument("--peak", type=float, default=989e12, help="dense bf16 FLOP/s per GPU (H100 SXM: 989e12)")
    a.add_argument("--kernel-eff", type=float, default=0.6, help="fraction of peak the GEMMs reach")
    a.add_argument("--nvlink", type=float, default=450e9, help="bytes/s per GPU per direction inside a node")
    a.add_argument("--net", type=float, default=50e9, help="bytes/s per GPU between nodes (400 Gb/s IB: 50e9)")
    a.add_argument("--overlap", type=float, default=0.9, help="fraction of the compute time that can hide data-parallel traffic")
    o = a.parse_args()
    print("| model | GPUs | TP x DP | compute s | TP comm s | DP comm s (exposed) | step s | tokens/s | MFU |")
    print("|---|---|---|---|---|---|---|---|---|")
    for model, gpus in (("palm-8b", 256), ("palm-540b", 6144)):
        for g in (o.gpus or [gpus]):
            r = estimate(model, g, o.tp, o.peak, o.kernel_eff, o.nvlink, o.net, o.overlap)
            print(f"| {model} | {g} | {o.tp} x {r['dp']} | {r['compute']:.2f} | {r['tp_comm']:.2f} | "
                  f"{r['dp_comm']:.2f} ({r['exposed']:.2f}) | {r['step']:.2f} | {r['tokens_per_s'] / 1e3:.0f}k | "
                  f"{100 * r['mfu']:.1f}% |")


if __name__ == "__main__":
    main()
