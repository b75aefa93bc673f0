#!/usr/bin/env -S /usr/bin/python3
"""PyTorch side of bench/engine_vs_torch.sh and bench/convnets_vs_torch.sh: the same zoo model
(src/core/model.c), input shape, batch and threads as bench_engine.c, timing SGD training steps
and inference on in-memory inputs.
Usage: torch_engine.py [--shape CxHxW] MODEL BATCH THREADS [train_steps] [infer_images]
  -> one JSON line. Defaults: shape 1x28x28, 300 steps (after steps//10 + 1 warm-up steps),
  10000 inference images (after a warm-up of max(BATCH, images//10))."""
import json, os, resource, sys, time
import torch
import torch.nn as nn
import torch.nn.functional as F

# nnzip gives every conv a bias, even before batch norm: bias=True keeps params and work equal.
# BatchNorm2d defaults (momentum 0.1, eps 1e-5) are nnzip's NZ_BN_MOMENTUM / NZ_BN_EPS.

def conv_bn(cin, cout, stride, relu):
    layers = [nn.Conv2d(cin, cout, 3, stride, 1, bias=True), nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)]
    if relu:
        layers.append(nn.ReLU())
    return layers

class ShortcutA(nn.Module):
    """Option A (NZ_OP_SHORTCUT): x[:, :, ::s, ::s], (out-in)//2 zero channels before, the rest after."""
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.stride, self.before, self.after = stride, (cout - cin) // 2, cout - cin - (cout - cin) // 2
    def forward(self, x):
        return F.pad(x[:, :, ::self.stride, ::self.stride], (0, 0, 0, 0, self.before, self.after))

class BasicBlock(nn.Module):
    """conv_bn a (ReLU) -> conv_bn b -> add shortcut -> ReLU, in the zoo's node order."""
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.a = nn.Sequential(*conv_bn(cin, cout, stride, True))
        self.b = nn.Sequential(*conv_bn(cout, cout, 1, False))
        self.short = ShortcutA(cin, cout, stride) if stride != 1 or cin != cout else nn.Identity()
    def forward(self, x):
        return F.relu(self.b(self.a(x)) + self.short(x))

def resnet(n, shape, classes=10):
    layers = conv_bn(shape[0], 16, 1, True)
    ch = 16
    for stage in range(3):
        out = 16 << stage
        for b in range(n):
            layers.append(BasicBlock(ch, out, 2 if stage > 0 and b == 0 else 1))
            ch = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(ch, classes)]
    return nn.Sequential(*layers)

def vgg16(shape, classes=10):
    cfg = [64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0]
    c, h, w = shape
    layers = []
    for v in cfg:
        if v:
            layers += conv_bn(c, v, 1, True)
            c = v
        elif h >= 2 and w >= 2:  # the zoo skips a pool once the map is 1 pixel
            layers.append(nn.MaxPool2d(2, 2))
            h, w = (h - 2) // 2 + 1, (w - 2) // 2 + 1
    if h > 1 or w > 1:
        layers.append(nn.AdaptiveAvgPool2d(1))
    layers += [nn.Flatten(), nn.Linear(c, classes)]
    return nn.Sequential(*layers)

def build(name, shape):
    c, h, w = shape
    if name == "lenet300":
        return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))
    if name == "lenet500":
        return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 500), nn.ReLU(), nn.Linear(500, 300), nn.ReLU(), nn.Linear(300, 10))
    if name == "lenet5":
        fh, fw = ((h - 4) // 2 - 4) // 2, ((w - 4) // 2 - 4) // 2
        return nn.Sequential(nn.Conv2d(c, 20, 5), nn.MaxPool2d(2, 2), nn.Conv2d(20, 50, 5), nn.MaxPool2d(2, 2),
                             nn.Flatten(), nn.Linear(50 * fh * fw, 500), nn.ReLU(), nn.Linear(500, 10))
    if name in ("resnet20", "resnet32", "resnet56"):
        return resnet((int(name[6:]) - 2) // 6, shape)
    if name == "vgg16":
        return vgg16(shape)
    raise SystemExit(f"unknown model {name}")

def macs_per_image(m, shape):
    """Multiply-accumulates of the conv and linear layers, counted as nz_model_flops does."""
    total = [0]
    def hook(mod, inp, out):
        if isinstance(mod, nn.Conv2d):
            total[0] += mod.weight.numel() * out.shape[2] * out.shape[3]
        else:
            total[0] += mod.weight.numel()
    hs = [mod.register_forward_hook(hook) for mod in m.modules() if isinstance(mod, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        m.eval()
        m(torch.zeros(1, *shape))
        m.train()
    for h in hs:
        h.remove()
    return total[0]

def usage():
    raise SystemExit("usage: torch_engine.py [--shape CxHxW] MODEL BATCH THREADS [train_steps] [infer_images]")

def main():
    shape, pos, args = (1, 28, 28), [], sys.argv[1:]
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--shape" or a.startswith("--shape="):
            if a == "--shape":
                i += 1
                if i >= len(args):
                    usage()
                a = args[i]
            else:
                a = a[len("--shape="):]
            try:
                shape = tuple(int(v) for v in a.split("x"))
            except ValueError:
                shape = ()
            if len(shape) != 3 or min(shape) <= 0:
                raise SystemExit(f"torch_engine.py: bad shape '{a}' (expected CxHxW, e.g. 3x32x32)")
        elif a.startswith("--"):
            usage()
        else:
            pos.append(a)
        i += 1
    if len(pos) < 3 or len(pos) > 5:
        usage()
    name, B, threads = pos[0], int(pos[1]), int(pos[2])
    steps = int(pos[3]) if len(pos) > 3 else 300
    infer_n = int(pos[4]) if len(pos) > 4 else 10000
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    m = build(name, shape)
    macs = macs_per_image(m, shape)
    x = torch.rand(B, *shape)
    y = torch.randint(0, 10, (B,))
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    lossf = nn.CrossEntropyLoss()
    t_train = 0
    for p in range(2):  # pass 0 warms up
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
            n = infer_n if p else max(B, infer_n // 10)
            t0 = time.perf_counter()
            done = 0
            while done < n:
                b = min(B, n - done)
                m(x[:b])
                done += b
            t_inf = time.perf_counter() - t0
    print(json.dumps({"impl": "pytorch", "torch": torch.__version__, "model": name, "shape": "x".join(map(str, shape)),
                      "batch": B, "threads": threads, "train_steps": steps, "infer_images": infer_n,
                      "params": sum(p.numel() for p in m.parameters()), "macs_per_image": macs,
                      "train_images_per_s": round(steps * B / t_train, 1), "infer_images_per_s": round(infer_n / t_inf, 1),
                      "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                      "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE") or "auto"}))

if __name__ == "__main__":
    main()
