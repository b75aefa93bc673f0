#!/usr/bin/env -S /usr/bin/python3
"""Writes PyTorch reference tensors that tests/test_torch_ref.c compares nnzip against.

Usage: scripts/torch_ref.py OUT.bin        (e.g. build/torch_ref.bin)

Needs only torch, numpy and the standard library (Debian: apt-get install python3-torch).
Everything is float32 on the CPU with a fixed seed; gradients come from autograd.

File format, all little-endian:
    magic    8 bytes   b"NZTREF01"
    then records up to the end of the file, each:
        u32  name_len                 (1..255)
        u8   name[name_len]           ASCII, no NUL
        u32  ndim                     (1..4)
        u32  dims[ndim]               (each >= 1)
        f32  data[prod(dims)]         row-major (C order)
Integers (labels, layer configurations) are stored as f32; they are exact below 2^24.

Records (B = batch):
    linear.{x,W,b,out,dout,dx,dW,db}      nn.Linear(24, 10), x (B=4, 24)
    conv{i}.cfg                           [C, H, W, OC, K, stride, pad], i = 0..4:
                                          (k3 s1 p1) (k3 s2 p1) (k5 s1 p0) (k1 s1 p0) (k1 s2 p0)
                                          on B=3, C=2, OC=4, 7x7 inputs
    conv{i}.{x,W,b,out,dout,dx,dW,db}     W (OC, C, K, K) as nn.Conv2d
    pool{i}.cfg                           [k, stride], i = 0..1: (2, 2) and (3, 2)
    pool{i}.{x,out,dout,dx}               nn.MaxPool2d on (2, 3, 7, 7) (floor mode)
    relu.{x,out,dout,dx}                  (4, 50)
    xent.{logits,labels,loss,dlogits}     nn.CrossEntropyLoss() (mean) on (8, 10)
    lenet.{x,labels}                      8 x (1, 28, 28) in [0, 1), labels in 0..9
    lenet.<p>.{W,b}                       initial parameters, p in conv1 conv2 fc1 fc2
    lenet.act.<node>                      activations: conv1 pool1 conv2 pool2 fc1 relu1
    lenet.logits, lenet.loss              (8, 10) and mean cross-entropy [1]
    lenet.grad.<p>.{W,b}                  gradients of the loss
    lenet.sgd                             [lr, momentum, weight_decay] = [0.1, 0.9, 5e-4]
    lenet.step.<p>.{W,b}                  parameters after one torch.optim.SGD step with those
                                          settings (momentum buffer starts empty)
    ndense.{x,V,g,b,out,dout,dx,dV,dg,db} norm x direction linear (nnzip NZ_OP_NDENSE), 24 -> 10
                                          on x (B=4, 24): W = g[:,None] * V / V.norm(dim=1)
    nconv{i}.cfg                          [C, H, W, OC, K, stride, pad], i = 0..1: (k3 s1 p1)
                                          (k5 s1 p0) on B=3, C=2, OC=4, 7x7 inputs
    nconv{i}.{x,V,g,b,out,dout,dx,dV,dg,db}  norm x direction conv (NZ_OP_NCONV2D), one norm per
                                          kernel: W = g[:,:,None,None] * V / V.norm(dim=(2,3)),
                                          V (OC, C, K, K), g (OC, C)
    In both, the rows/kernels of V have norms spread over [0.3, 3] (not unit: the formula must
    hold for any ||V||), one g is negative and one is exactly 0 (a removed group: W is 0 there,
    dg still <dW, V/||V||>, dV 0).
The LeNet is Caffe's (Han et al.'s LeNet-5): Conv2d(1,20,5) -> MaxPool2d(2,2) -> Conv2d(20,50,5)
-> MaxPool2d(2,2) -> Flatten -> Linear(800,500) -> ReLU -> Linear(500,10), as nnzip's zoo
"lenet5", with PyTorch's default initialisation.
"""

import struct
import sys

import numpy as np
import torch
import torch.nn as nn

MAGIC = b"NZTREF01"


class RefWriter:
    def __init__(self):
        self.parts = [MAGIC]
        self.names = set()

    def add(self, name, t):
        if name in self.names:
            raise ValueError(f"duplicate record {name}")
        self.names.add(name)
        if isinstance(t, torch.Tensor):
            t = t.detach().cpu().numpy()
        a = np.ascontiguousarray(np.asarray(t, dtype="<f4"))
        if a.ndim == 0:
            a = a.reshape(1)
        if not 1 <= a.ndim <= 4:
            raise ValueError(f"{name}: {a.ndim} dims")
        nb = name.encode("ascii")
        self.parts.append(struct.pack("<I", len(nb)) + nb)
        self.parts.append(struct.pack("<I", a.ndim) + struct.pack(f"<{a.ndim}I", *a.shape))
        self.parts.append(a.tobytes())

    def write(self, path):
        with open(path, "wb") as f:
            for p in self.parts:
                f.write(p)


def leaf(t):
    return t.detach().clone().requires_grad_(True)


def linear_case(w):
    lin = nn.Linear(24, 10)
    x = leaf(torch.randn(4, 24))
    out = lin(x)
    dout = torch.randn_like(out)
    out.backward(dout)
    for k, v in [("x", x), ("W", lin.weight), ("b", lin.bias), ("out", out), ("dout", dout),
                 ("dx", x.grad), ("dW", lin.weight.grad), ("db", lin.bias.grad)]:
        w.add(f"linear.{k}", v)


CONV_CONFIGS = [(3, 1, 1), (3, 2, 1), (5, 1, 0), (1, 1, 0), (1, 2, 0)]


def conv_cases(w):
    B, C, H, W, OC = 3, 2, 7, 7, 4
    for i, (k, s, p) in enumerate(CONV_CONFIGS):
        conv = nn.Conv2d(C, OC, k, stride=s, padding=p)
        x = leaf(torch.randn(B, C, H, W))
        out = conv(x)
        dout = torch.randn_like(out)
        out.backward(dout)
        w.add(f"conv{i}.cfg", [C, H, W, OC, k, s, p])
        for n, v in [("x", x), ("W", conv.weight), ("b", conv.bias), ("out", out),
                     ("dout", dout), ("dx", x.grad), ("dW", conv.weight.grad),
                     ("db", conv.bias.grad)]:
            w.add(f"conv{i}.{n}", v)


def pool_cases(w):
    for i, (k, s) in enumerate([(2, 2), (3, 2)]):
        x = leaf(torch.randn(2, 3, 7, 7))  # continuous values: no ties
        out = nn.MaxPool2d(k, s)(x)
        dout = torch.randn_like(out)
        out.backward(dout)
        w.add(f"pool{i}.cfg", [k, s])
        for n, v in [("x", x), ("out", out), ("dout", dout), ("dx", x.grad)]:
            w.add(f"pool{i}.{n}", v)


def relu_case(w):
    x = leaf(torch.randn(4, 50))
    out = torch.relu(x)
    dout = torch.randn_like(out)
    out.backward(dout)
    for n, v in [("x", x), ("out", out), ("dout", dout), ("dx", x.grad)]:
        w.add(f"relu.{n}", v)


def xent_case(w):
    logits = leaf(2 * torch.randn(8, 10))
    labels = torch.randint(0, 10, (8,))
    loss = nn.CrossEntropyLoss()(logits, labels)
    loss.backward()
    w.add("xent.logits", logits)
    w.add("xent.labels", labels.float())
    w.add("xent.loss", loss)
    w.add("xent.dlogits", logits.grad)


class LeNet5(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5)
        self.pool1 = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.pool2 = nn.MaxPool2d(2, 2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(800, 500)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(500, 10)

    def forward(self, x):
        acts = {}
        for name in ["conv1", "pool1", "conv2", "pool2", "flatten", "fc1", "relu1", "fc2"]:
            x = getattr(self, name)(x)
            acts[name] = x
        return x, acts


LENET_PARAMS = ["conv1", "conv2", "fc1", "fc2"]
SGD = dict(lr=0.1, momentum=0.9, weight_decay=5e-4)


def lenet_case(w):
    net = LeNet5()
    x = torch.rand(8, 1, 28, 28)
    labels = torch.randint(0, 10, (8,))
    w.add("lenet.x", x)
    w.add("lenet.labels", labels.float())
    for p in LENET_PARAMS:
        layer = getattr(net, p)
        w.add(f"lenet.{p}.W", layer.weight)
        w.add(f"lenet.{p}.b", layer.bias)
    logits, acts = net(x)
    loss = nn.CrossEntropyLoss()(logits, labels)
    opt = torch.optim.SGD(net.parameters(), **SGD)
    opt.zero_grad()
    loss.backward()
    for name in ["conv1", "pool1", "conv2", "pool2", "fc1", "relu1"]:
        w.add(f"lenet.act.{name}", acts[name])
    w.add("lenet.logits", logits)
    w.add("lenet.loss", loss)
    for p in LENET_PARAMS:
        layer = getattr(net, p)
        w.add(f"lenet.grad.{p}.W", layer.weight.grad)
        w.add(f"lenet.grad.{p}.b", layer.bias.grad)
    opt.step()
    w.add("lenet.sgd", [SGD["lr"], SGD["momentum"], SGD["weight_decay"]])
    for p in LENET_PARAMS:
        layer = getattr(net, p)
        w.add(f"lenet.step.{p}.W", layer.weight)
        w.add(f"lenet.step.{p}.b", layer.bias)


def normdir_groups(V, g):
    """Rescales each group (all but the first dim of g's rank) of V to a norm in [0.3, 3] and sets
    g's first entry to 0 and its second negative."""
    gdims = tuple(range(g.dim(), V.dim()))
    norms = 0.3 + 2.7 * torch.rand(g.shape)
    V = V / V.norm(dim=gdims, keepdim=True) * norms.reshape(norms.shape + (1,) * len(gdims))
    g = g.clone()
    g.view(-1)[0] = 0.0
    g.view(-1)[1] = -g.view(-1)[1].abs() - 0.1
    return V, g


def ndense_case(w):
    B, NI, NO = 4, 24, 10
    V, g = normdir_groups(torch.randn(NO, NI), torch.randn(NO))
    V, g, b = leaf(V), leaf(g), leaf(0.5 * torch.randn(NO))
    x = leaf(torch.randn(B, NI))
    W = g[:, None] * V / V.norm(dim=1, keepdim=True)
    out = torch.nn.functional.linear(x, W, b)
    dout = torch.randn_like(out)
    out.backward(dout)
    for n, v in [("x", x), ("V", V), ("g", g), ("b", b), ("out", out), ("dout", dout),
                 ("dx", x.grad), ("dV", V.grad), ("dg", g.grad), ("db", b.grad)]:
        w.add(f"ndense.{n}", v)


NCONV_CONFIGS = [(3, 1, 1), (5, 1, 0)]


def nconv_cases(w):
    B, C, H, W_, OC = 3, 2, 7, 7, 4
    for i, (k, s, p) in enumerate(NCONV_CONFIGS):
        V, g = normdir_groups(torch.randn(OC, C, k, k), torch.randn(OC, C))
        V, g, b = leaf(V), leaf(g), leaf(0.5 * torch.randn(OC))
        x = leaf(torch.randn(B, C, H, W_))
        W = g[:, :, None, None] * V / V.norm(dim=(2, 3), keepdim=True)
        out = torch.nn.functional.conv2d(x, W, b, stride=s, padding=p)
        dout = torch.randn_like(out)
        out.backward(dout)
        w.add(f"nconv{i}.cfg", [C, H, W_, OC, k, s, p])
        for n, v in [("x", x), ("V", V), ("g", g), ("b", b), ("out", out), ("dout", dout),
                     ("dx", x.grad), ("dV", V.grad), ("dg", g.grad), ("db", b.grad)]:
            w.add(f"nconv{i}.{n}", v)


def main():
    if len(sys.argv) != 2:
        sys.stderr.write("usage: torch_ref.py OUT.bin\n")
        return 2
    torch.manual_seed(1234)
    torch.set_default_dtype(torch.float32)
    w = RefWriter()
    linear_case(w)
    conv_cases(w)
    pool_cases(w)
    relu_case(w)
    xent_case(w)
    lenet_case(w)
    # appended after the older records, so theirs stay as they were
    ndense_case(w)
    nconv_cases(w)
    w.write(sys.argv[1])
    print(f"torch_ref: wrote {len(w.names)} tensors to {sys.argv[1]} (torch {torch.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
