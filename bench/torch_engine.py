#!/usr/bin/env -S /usr/bin/python3
"""PyTorch side of bench/engine_vs_torch.sh: the same zoo model, batch and threads as
bench_engine.c, timing SGD training steps and inference on in-memory inputs.
Usage: torch_engine.py MODEL BATCH THREADS [train_steps] [infer_images] -> one JSON line."""
import json, resource, sys, time
import torch
import torch.nn as nn

def build(name):
    if name == "lenet300":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))
    if name == "lenet500":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 500), nn.ReLU(), nn.Linear(500, 300), nn.ReLU(), nn.Linear(300, 10))
    if name == "lenet5":
        return nn.Sequential(nn.Conv2d(1, 20, 5), nn.MaxPool2d(2, 2), nn.Conv2d(20, 50, 5), nn.MaxPool2d(2, 2),
                             nn.Flatten(), nn.Linear(800, 500), nn.ReLU(), nn.Linear(500, 10))
    raise SystemExit(f"unknown model {name}")

def main():
    name, B, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    steps = int(sys.argv[4]) if len(sys.argv) > 4 else 300
    infer_n = int(sys.argv[5]) if len(sys.argv) > 5 else 10000
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    m = build(name)
    x = torch.rand(B, 1, 28, 28)
    y = torch.randint(0, 10, (B,))
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    lossf = nn.CrossEntropyLoss()
    t_train = 0
    for p in range(2):
        n = steps if p else steps // 10 + 1
        t0 = time.perf_counter()
        for _ in range(n):
            opt.zero_grad()
            loss = lossf(m(x), y)
            loss.backward()
            opt.step()
        t_train = time.perf_counter() - t0
    m.eval()
    t_inf = 0
    with torch.no_grad():
        for p in range(2):
            t0 = time.perf_counter()
            done = 0
            while done < infer_n:
                b = min(B, infer_n - done)
                m(x[:b])
                done += b
            t_inf = time.perf_counter() - t0
    print(json.dumps({"impl": "pytorch", "torch": torch.__version__, "model": name, "batch": B, "threads": threads,
                      "train_images_per_s": round(steps * B / t_train, 1), "infer_images_per_s": round(infer_n / t_inf, 1),
                      "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))

if __name__ == "__main__":
    main()
