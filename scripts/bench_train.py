#!/usr/bin/env python
"""Benchmark the URM planner on CPU: training time, single-decision latency, batched throughput,
FLOPs per decision and the fraction of the machine's measured fp32 matmul peak.

Usage: python scripts/bench_train.py [--n-train 20000] [--epochs 10] [--seq-len 96] [--json PATH]
Targets (issue #7): 20,000 × 10 epochs ≤ 5 min; batch-1 median ≤ 2 ms, p99 ≤ 10 ms; ≥ 2,000 decisions/s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from planner_model.checkpoint import load_checkpoint
from planner_model.config import TrainConfig
from planner_model.data import action_table, load_dataset_info, load_split
from planner_model.decode import fast_decode
from planner_model.model import flops_per_example
from planner_model.synthetic import write_synthetic_dataset
from planner_model.train import train


def measured_peak_gflops(size: int = 1024, reps: int = 20) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best / 1e9


def logits_order(model: torch.nn.Module) -> list[str]:
    """Head names in the order the torch model returns them (``fast_decode``'s column order)."""
    return list(model.heads.keys())  # type: ignore[operator]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-train", type=int, default=20_000)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seq-len", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--min-len", type=int, default=None, help="shortest example (default: seq_len, i.e. no padding)")
    ap.add_argument("--latency-iters", type=int, default=2000)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="urm-bench-"))
    n_total = int(args.n_train / 0.8) + 1
    data = write_synthetic_dataset(work / "data", n=n_total, seq_len=args.seq_len, min_len=args.min_len or args.seq_len, seed=0)
    info = load_dataset_info(data)
    figures: dict[str, object] = {"torch": torch.__version__, "threads": torch.get_num_threads(), "n_train": info.splits["train"], "epochs": args.epochs, "seq_len": args.seq_len}

    t0 = time.perf_counter()
    result = train(data, work / "ckpt", TrainConfig(epochs=args.epochs, batch_size=args.batch_size, quiet=True, device="cpu"))
    figures["train_seconds"] = round(time.perf_counter() - t0, 2)
    figures["train_examples_per_s"] = round(info.splits["train"] * args.epochs / figures["train_seconds"], 1)  # type: ignore[operator]
    figures["val_exact_match"] = result.best_metrics["exact_match"]

    ckpt = load_checkpoint(work / "ckpt", expected_actions=info.actions)
    model, cfg = ckpt.model, ckpt.config
    table = action_table(info)
    test = np.asarray(load_split(info, "test")["inputs"], dtype=np.int64)
    figures["model"] = cfg.to_dict()
    figures["parameters"] = model.num_parameters()

    # Batch-1 latency as the ``urm`` strategy runs it on CPU: the numpy forward (planner_model.runtime),
    # and torch with one intra-op thread (what the strategy sets) for comparison.
    from planner_model.runtime import NumpyURM

    np_model = NumpyURM.from_model(model)
    np_lat = []
    for i in range(args.latency_iters):
        row = test[i % len(test)][None]
        t = time.perf_counter()
        np_logits, _ = np_model(row)
        fast_decode([np_logits[name] for name in logits_order(model)], table, ckpt.temperature)
        np_lat.append(time.perf_counter() - t)
    np_ms = sorted(x * 1000 for x in np_lat[100:])
    figures["latency_ms_median_numpy_runtime"] = round(statistics.median(np_ms), 3)
    figures["latency_ms_p99_numpy_runtime"] = round(np_ms[int(0.99 * (len(np_ms) - 1))], 3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    lat = []
    with torch.inference_mode():
        for i in range(args.latency_iters):
            ids = torch.from_numpy(test[i % len(test)][None])
            t = time.perf_counter()
            logits, _ = model(ids)
            fast_decode([x.numpy() for x in logits.values()], table, ckpt.temperature)
            lat.append(time.perf_counter() - t)
    lat_ms = sorted(x * 1000 for x in lat[100:])
    figures["latency_ms_median"] = round(statistics.median(lat_ms), 3)
    figures["latency_ms_p99"] = round(lat_ms[int(0.99 * (len(lat_ms) - 1))], 3)
    torch.set_num_threads(threads)

    throughput = {}
    with torch.inference_mode():
        for bs in (64, 256, 1024):
            ids = torch.from_numpy(test[:bs] if len(test) >= bs else np.resize(test, (bs, test.shape[1])))
            model(ids)
            reps, t = 0, time.perf_counter()
            while time.perf_counter() - t < 2.0:
                logits, _ = model(ids)
                fast_decode([x.numpy() for x in logits.values()], table)
                reps += 1
            throughput[bs] = round(bs * reps / (time.perf_counter() - t), 1)
    figures["throughput_decisions_per_s"] = throughput
    best_tp = max(throughput.values())

    flops = flops_per_example(cfg, args.seq_len)
    try:
        from torch.utils.flop_counter import FlopCounterMode

        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model(torch.from_numpy(np.full((1, args.seq_len), 5, dtype=np.int64)))
        figures["flops_per_decision_counter"] = int(counter.get_total_flops())
    except Exception as exc:  # the counter is best-effort across torch versions
        figures["flops_per_decision_counter"] = f"unavailable: {exc}"
    peak = measured_peak_gflops()
    figures["flops_per_decision_analytic"] = flops
    figures["peak_fp32_matmul_gflops"] = round(peak, 1)
    figures["achieved_gflops_batched"] = round(flops * best_tp / 1e9, 2)
    figures["fraction_of_peak_batched"] = round(flops * best_tp / 1e9 / peak, 4)
    figures["fraction_of_peak_batch1"] = round(flops / (figures["latency_ms_median"] / 1000) / 1e9 / peak, 4)  # type: ignore[operator]
    figures["targets_met"] = {
        "train_le_300s": figures["train_seconds"] <= 300,  # type: ignore[operator]
        "latency_median_le_2ms": figures["latency_ms_median_numpy_runtime"] <= 2,  # type: ignore[operator]
        "latency_p99_le_10ms": figures["latency_ms_p99_numpy_runtime"] <= 10,  # type: ignore[operator]
        "throughput_ge_2000": best_tp >= 2000,
    }
    text = json.dumps(figures, indent=2, sort_keys=True)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
