#!/usr/bin/env python
"""GPU check for the URM planner (run on a CUDA machine): synthetic dataset → train on CUDA with
bf16 autocast → evaluate → batched throughput and batch-1 latency on CUDA. Writes the figures to
$OUT/gpu_check.json (or ./gpu_check.json). Exits 0 with a message when CUDA is unavailable.

Usage: python scripts/gpu_check.py [--n-train 20000] [--epochs 5] [--batch-size 512]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-train", type=int, default=20_000)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--seq-len", type=int, default=96)
    args = ap.parse_args()
    out_dir = Path(os.environ.get("OUT") or ".")
    try:
        import torch
    except ImportError:
        print("gpu_check: torch is not installed; nothing to check")
        return 0
    if not torch.cuda.is_available():
        print("gpu_check: CUDA is not available on this machine; skipping (no figures written)")
        return 0

    import numpy as np

    from planner_model.checkpoint import load_checkpoint
    from planner_model.config import TrainConfig
    from planner_model.data import action_table, load_dataset_info, load_split
    from planner_model.decode import fast_decode
    from planner_model.evaluate import evaluate
    from planner_model.model import flops_per_example
    from planner_model.synthetic import write_synthetic_dataset
    from planner_model.train import train

    work = Path(tempfile.mkdtemp(prefix="urm-gpu-"))
    figures: dict[str, object] = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "bf16": torch.cuda.is_bf16_supported()}
    data = write_synthetic_dataset(work / "data", n=int(args.n_train / 0.8) + 1, seq_len=args.seq_len, min_len=args.seq_len, seed=0)
    info = load_dataset_info(data)
    t0 = time.perf_counter()
    result = train(data, work / "ckpt", TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=3e-3, quiet=True, device="cuda"))
    torch.cuda.synchronize()
    figures["train_seconds"] = round(time.perf_counter() - t0, 2)
    figures["train_examples_per_s"] = round(info.splits["train"] * args.epochs / figures["train_seconds"], 1)  # type: ignore[operator]
    figures["val_exact_match"] = result.best_metrics["exact_match"]
    report = evaluate(work / "ckpt", data, work / "eval", device="cuda", n_bootstrap=200)
    figures["test_exact_match"] = report["model"]["exact_match"]
    figures["test_ece_calibrated"] = report["model"]["ece_calibrated"]

    ckpt = load_checkpoint(work / "ckpt", expected_actions=info.actions, device="cuda")
    model, table = ckpt.model, action_table(info)
    test = np.asarray(load_split(info, "test")["inputs"], dtype=np.int64)
    dev = torch.device("cuda")
    lat = []
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        for i in range(500):
            t = time.perf_counter()
            logits, _ = model(torch.from_numpy(test[i % len(test)][None]).to(dev))
            fast_decode([x.float().cpu().numpy() for x in logits.values()], table)
            lat.append((time.perf_counter() - t) * 1000)
        lat = sorted(lat[50:])
        figures["latency_ms_median"] = round(statistics.median(lat), 3)
        figures["latency_ms_p99"] = round(lat[int(0.99 * (len(lat) - 1))], 3)
        tp = {}
        for bs in (1024, 8192):
            ids = torch.from_numpy(np.resize(test, (bs, test.shape[1]))).to(dev)
            model(ids)
            torch.cuda.synchronize()
            reps, t = 0, time.perf_counter()
            while time.perf_counter() - t < 2.0:
                logits, _ = model(ids)
                reps += 1
            torch.cuda.synchronize()
            tp[bs] = round(bs * reps / (time.perf_counter() - t), 1)
        figures["throughput_decisions_per_s_forward_only"] = tp
    figures["flops_per_decision"] = flops_per_example(ckpt.config, args.seq_len)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gpu_check.json").write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    print(json.dumps(figures, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
