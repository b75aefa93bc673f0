#!/usr/bin/env -S /usr/bin/python3
"""PyTorch twin of `nnzip train` for memory and end-to-end time comparisons (bench/train_rss.sh):
the same zoo model, data (MNIST idx files from a directory), batch, SGD settings and epochs.
Usage: torch_train.py MODEL DATA_DIR EPOCHS LIMIT THREADS"""
import json, math, resource, sys, time
import numpy as np
import torch
import torch.nn as nn
sys.path.insert(0, __file__.rsplit("/", 1)[0])
from torch_engine import build

def idx(path, header):
    return np.frombuffer(open(path, "rb").read()[header:], np.uint8)

def main():
    name, d, epochs, limit, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    X = torch.tensor(idx(f"{d}/train-images-idx3-ubyte", 16).reshape(-1, 1, 28, 28)[:limit].astype(np.float32) / 255)
    Y = torch.tensor(idx(f"{d}/train-labels-idx1-ubyte", 8)[:limit].astype(np.int64))
    m = build(name)
    lr = 0.05 if name == "lenet5" else 0.1
    opt = torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    n, B = X.shape[0], 64
    steps = math.ceil(n / B) * epochs
    t0, k = time.perf_counter(), 0
    for e in range(epochs):
        p = torch.randperm(n)
        for s in range(0, n, B):
            for g in opt.param_groups:
                g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * k / steps))
            k += 1
            i = p[s:s + B]
            opt.zero_grad()
            nn.functional.cross_entropy(m(X[i]), Y[i]).backward()
            opt.step()
    dt = time.perf_counter() - t0
    print(json.dumps({"impl": "pytorch", "model": name, "images_per_s": round(n * epochs / dt, 1),
                      "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))

if __name__ == "__main__":
    main()
