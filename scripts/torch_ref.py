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
    dconv{i}.cfg, dconv{i}.{x,W,...,db}  as conv{i}, i = 0..5, on DCONV_SHAPES (the shapes of
                                          nnzip's direct 3x3 kernels: odd sizes, channel counts
                                          off the register block, batch 1, stride 2)
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
    bn2d.{x,gamma,beta,rm0,rv0,out,dout,dx,dgamma,dbeta,rm,rv}
                                          nn.BatchNorm2d(3) in training mode on x (B=4, 3, 5, 5)
                                          whose channels have means up to +-4 and spreads
                                          0.5..2; rm0/rv0 the running statistics before, rm/rv
                                          after the forward (momentum 0.1, unbiased variance)
    bn2d_eval.{same}                      the same layer in eval mode (rm = rm0, rv = rv0)
    bn1d.{same}                           nn.BatchNorm1d(6), training, on x (B=8, 6)
    avgpool{i}.cfg                        [k, stride], i = 0..1: (2, 2) and (3, 1)
    avgpool{i}.{x,out,dout,dx}            nn.AvgPool2d on (2, 3, 7, 7) (floor mode)
    gap.{x,out,dout,dx}                   nn.AdaptiveAvgPool2d(1) on (2, 3, 5, 6)
    shortcut{i}.cfg                       [C, OC, stride], i = 0..2: (4, 8, 2) on 7x7,
                                          (2, 5, 2) on 6x6, (16, 32, 2) on 8x8
    shortcut{i}.{x,out,dout,dx}           He et al.'s option A on (B=2, C, H, W):
                                          F.pad(x[:, :, ::s, ::s], (0, 0, 0, 0, lo, OC - C - lo)),
                                          lo = (OC - C) // 2 (the extra channel of an odd
                                          difference goes after)
    select.{x,index,out,dout,dx}          x (B=2, 1, 5, 6) flattened, then index_select(1, index)
                                          with an increasing random subset of 13 of the 30
                                          features (index stored as floats)
    rn.*                                  one training step of a tiny CIFAR-style ResNet (TinyResNet
                                          below) on x (B=8, 3, 8, 8):
      rn.x, rn.labels
      rn.<node>.<slot>                    the parameters before the step, nodes in graph order,
                                          slots W, b (conv, fc) and gamma, beta, running_mean,
                                          running_var (BN; random, so the update shows)
      rn.act.<node>                       stem_relu, b1_relu, b2_short, b2_relu, gap
      rn.logits, rn.loss
      rn.grad.<node>.<slot>               gradients of the loss (trainable slots)
      rn.after.<node>.running_{mean,var}  running statistics after the training forward
      rn.sgd                              [lr, momentum, weight_decay] = [0.1, 0.9, 5e-4]
      rn.step.<node>.<slot>               every slot after one torch.optim.SGD step (buffers: as
                                          after the forward; the optimizer does not touch them)
    r20.*                                 nnzip's zoo resnet20 (CIFAR ResNet-20, option A, conv
                                          biases) in eval mode on x (2, 3, 32, 32):
      r20.x, r20.logits, r20.act.gap
      r20.<node>.<slot>                   every parameter, node names as nz_zoo_build's (stem_conv,
                                          stem_bn, s1b1_a_conv, s1b1_a_bn, s1b1_b_conv, ..., fc);
                                          default conv/fc initialisation, BN gamma 0.5..1.5, beta
                                          ~ 0.2 N(0, 1), running statistics calibrated as after
                                          training (the batch statistics of 16 random images,
                                          then moved by ~10%), so activations keep their scale
The LeNet is Caffe's (Han et al.'s LeNet-5): Conv2d(1,20,5) -> MaxPool2d(2,2) -> Conv2d(20,50,5)
-> MaxPool2d(2,2) -> Flatten -> Linear(800,500) -> ReLU -> Linear(500,10), as nnzip's zoo
"lenet5", with PyTorch's default initialisation.
"""

import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

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


# (B, C, H, W, OC, k, stride, pad)
DCONV_SHAPES = [(2, 3, 5, 9, 11, 3, 1, 1), (1, 1, 1, 18, 1, 3, 1, 1), (3, 16, 13, 17, 20, 3, 1, 1),
                (2, 9, 32, 32, 16, 3, 1, 1), (2, 5, 9, 7, 6, 3, 2, 1), (2, 16, 16, 16, 32, 3, 2, 1)]


def conv_cases(w, prefix="conv", shapes=None):
    if shapes is None:
        shapes = [(3, 2, 7, 7, 4, k, s, p) for k, s, p in CONV_CONFIGS]
    for i, (B, C, H, W, OC, k, s, p) in enumerate(shapes):
        conv = nn.Conv2d(C, OC, k, stride=s, padding=p)
        x = leaf(torch.randn(B, C, H, W))
        out = conv(x)
        dout = torch.randn_like(out)
        out.backward(dout)
        w.add(f"{prefix}{i}.cfg", [C, H, W, OC, k, s, p])
        for n, v in [("x", x), ("W", conv.weight), ("b", conv.bias), ("out", out),
                     ("dout", dout), ("dx", x.grad), ("dW", conv.weight.grad),
                     ("db", conv.bias.grad)]:
            w.add(f"{prefix}{i}.{n}", v)


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


BN_SLOTS = ["gamma", "beta", "running_mean", "running_var"]


def bn_randomize(bn, gen_scale=1.0):
    """Random affine parameters and running statistics (one gamma negative)."""
    C = bn.num_features
    with torch.no_grad():
        bn.weight.copy_(0.5 + torch.rand(C))
        bn.weight[1] = -0.7
        bn.bias.copy_(0.5 * torch.randn(C))
        bn.running_mean.copy_(0.5 * torch.randn(C))
        bn.running_var.copy_(0.5 + 1.5 * torch.rand(C))


def bn_case(w, prefix, bn, x, training):
    x = leaf(x)
    rm0, rv0 = bn.running_mean.clone(), bn.running_var.clone()
    bn.train(training)
    out = bn(x)
    dout = torch.randn_like(out)
    out.backward(dout)
    for n, v in [("x", x), ("gamma", bn.weight), ("beta", bn.bias), ("rm0", rm0), ("rv0", rv0),
                 ("out", out), ("dout", dout), ("dx", x.grad), ("dgamma", bn.weight.grad),
                 ("dbeta", bn.bias.grad), ("rm", bn.running_mean), ("rv", bn.running_var)]:
        w.add(f"{prefix}.{n}", v)


def bn_cases(w):
    C = 3
    mean = 4 * torch.rand(1, C, 1, 1) - 2
    spread = 0.5 + 1.5 * torch.rand(1, C, 1, 1)
    x = torch.randn(4, C, 5, 5) * spread + 2 * mean
    for prefix, training in [("bn2d", True), ("bn2d_eval", False)]:
        bn = nn.BatchNorm2d(C)
        bn_randomize(bn)
        bn_case(w, prefix, bn, x, training)
    bn = nn.BatchNorm1d(6)
    bn_randomize(bn)
    bn_case(w, "bn1d", bn, torch.randn(8, 6) * (0.5 + 1.5 * torch.rand(6)) + torch.randn(6), True)


def avgpool_cases(w):
    for i, (k, s) in enumerate([(2, 2), (3, 1)]):
        x = leaf(torch.randn(2, 3, 7, 7))
        out = nn.AvgPool2d(k, s)(x)
        dout = torch.randn_like(out)
        out.backward(dout)
        w.add(f"avgpool{i}.cfg", [k, s])
        for n, v in [("x", x), ("out", out), ("dout", dout), ("dx", x.grad)]:
            w.add(f"avgpool{i}.{n}", v)
    x = leaf(torch.randn(2, 3, 5, 6))
    out = nn.AdaptiveAvgPool2d(1)(x)
    dout = torch.randn_like(out)
    out.backward(dout)
    for n, v in [("x", x), ("out", out), ("dout", dout), ("dx", x.grad)]:
        w.add(f"gap.{n}", v)


def shortcut_a(x, oc, s):
    """He et al.'s option-A shortcut: subsample, then zero channels on both sides."""
    c = x.shape[1]
    lo = (oc - c) // 2
    return F.pad(x[:, :, ::s, ::s], (0, 0, 0, 0, lo, oc - c - lo))


def shortcut_cases(w):
    for i, (c, oc, s, hw) in enumerate([(4, 8, 2, 7), (2, 5, 2, 6), (16, 32, 2, 8)]):
        x = leaf(torch.randn(2, c, hw, hw))
        out = shortcut_a(x, oc, s)
        dout = torch.randn_like(out)
        out.backward(dout)
        w.add(f"shortcut{i}.cfg", [c, oc, s])
        for n, v in [("x", x), ("out", out), ("dout", dout), ("dx", x.grad)]:
            w.add(f"shortcut{i}.{n}", v)


def select_case(w):
    x = leaf(torch.randn(2, 1, 5, 6))
    index = torch.sort(torch.randperm(30)[:13]).values
    out = torch.index_select(x.flatten(1), 1, index)
    dout = torch.randn_like(out)
    out.backward(dout)
    for n, v in [("x", x), ("index", index.float()), ("out", out), ("dout", dout), ("dx", x.grad)]:
        w.add(f"select.{n}", v)


def node_params(mod):
    """(slot name, tensor) of a conv/linear/BN module in nnzip's slot order."""
    if isinstance(mod, nn.BatchNorm2d):
        return list(zip(BN_SLOTS, [mod.weight, mod.bias, mod.running_mean, mod.running_var]))
    return [("W", mod.weight), ("b", mod.bias)]


class TinyResNet(nn.Module):
    """stem conv3x3(3->4)-BN-ReLU; block 4->4 (identity shortcut); block 4->8 stride 2 (option
    A); global average pool; fc(8->10). Conv layers have biases, as nnzip's."""

    NODES = ["stem_conv", "stem_bn", "b1a_conv", "b1a_bn", "b1b_conv", "b1b_bn", "b2a_conv",
             "b2a_bn", "b2b_conv", "b2b_bn", "fc"]

    def __init__(self):
        super().__init__()
        self.stem_conv, self.stem_bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.b1a_conv, self.b1a_bn = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.b1b_conv, self.b1b_bn = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.b2a_conv, self.b2a_bn = nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8)
        self.b2b_conv, self.b2b_bn = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        acts = {}
        x = acts["stem_relu"] = F.relu(self.stem_bn(self.stem_conv(x)))
        y = F.relu(self.b1a_bn(self.b1a_conv(x)))
        y = self.b1b_bn(self.b1b_conv(y))
        x = acts["b1_relu"] = F.relu(y + x)
        y = F.relu(self.b2a_bn(self.b2a_conv(x)))
        y = self.b2b_bn(self.b2b_conv(y))
        sc = acts["b2_short"] = shortcut_a(x, 8, 2)
        x = acts["b2_relu"] = F.relu(y + sc)
        x = acts["gap"] = x.mean(dim=(2, 3))
        return self.fc(x), acts


def tiny_resnet_case(w):
    net = TinyResNet()
    with torch.no_grad():
        for name in TinyResNet.NODES:
            mod = getattr(net, name)
            if isinstance(mod, nn.BatchNorm2d):
                C = mod.num_features
                mod.weight.copy_(0.5 + torch.rand(C))
                mod.bias.copy_(0.3 * torch.randn(C))
                mod.running_mean.copy_(0.2 * torch.randn(C))
                mod.running_var.copy_(0.5 + torch.rand(C))
    x = torch.randn(8, 3, 8, 8)
    labels = torch.randint(0, 10, (8,))
    w.add("rn.x", x)
    w.add("rn.labels", labels.float())
    for name in TinyResNet.NODES:
        for slot, t in node_params(getattr(net, name)):
            w.add(f"rn.{name}.{slot}", t)
    net.train()
    logits, acts = net(x)
    loss = nn.CrossEntropyLoss()(logits, labels)
    opt = torch.optim.SGD(net.parameters(), **SGD)
    opt.zero_grad()
    loss.backward()
    for a in ["stem_relu", "b1_relu", "b2_short", "b2_relu", "gap"]:
        w.add(f"rn.act.{a}", acts[a])
    w.add("rn.logits", logits)
    w.add("rn.loss", loss)
    for name in TinyResNet.NODES:
        for slot, t in node_params(getattr(net, name))[:2]:
            w.add(f"rn.grad.{name}.{slot}", t.grad)
        mod = getattr(net, name)
        if isinstance(mod, nn.BatchNorm2d):
            w.add(f"rn.after.{name}.running_mean", mod.running_mean)
            w.add(f"rn.after.{name}.running_var", mod.running_var)
    opt.step()
    w.add("rn.sgd", [SGD["lr"], SGD["momentum"], SGD["weight_decay"]])
    for name in TinyResNet.NODES:
        for slot, t in node_params(getattr(net, name)):
            w.add(f"rn.step.{name}.{slot}", t)


class CifarResNet(nn.Module):
    """He et al.'s CIFAR ResNet-(6n+2) with option-A shortcuts, named as nnzip's zoo builds it."""

    def __init__(self, n, classes=10):
        super().__init__()
        self.order = []  # (node name, module) in nnzip's node order

        def conv_bn(prefix, cin, cout, stride):
            conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
            bn = nn.BatchNorm2d(cout)
            self.add_module(f"{prefix}_conv", conv)
            self.add_module(f"{prefix}_bn", bn)
            self.order += [(f"{prefix}_conv", conv), (f"{prefix}_bn", bn)]

        conv_bn("stem", 3, 16, 1)
        self.blocks = []
        ch = 16
        for stage in range(3):
            out = 16 << stage
            for b in range(n):
                stride = 2 if stage > 0 and b == 0 else 1
                pre = f"s{stage + 1}b{b + 1}"
                conv_bn(f"{pre}_a", ch, out, stride)
                conv_bn(f"{pre}_b", out, out, 1)
                self.blocks.append((pre, out, stride, ch != out or stride != 1))
                ch = out
        self.fc = nn.Linear(64, classes)
        self.order.append(("fc", self.fc))

    def forward(self, x):
        m = dict(self.order)
        x = F.relu(m["stem_bn"](m["stem_conv"](x)))
        for pre, out, stride, short in self.blocks:
            y = F.relu(m[f"{pre}_a_bn"](m[f"{pre}_a_conv"](x)))
            y = m[f"{pre}_b_bn"](m[f"{pre}_b_conv"](y))
            x = F.relu(y + (shortcut_a(x, out, stride) if short else x))
        gap = x.mean(dim=(2, 3))
        return self.fc(gap), gap


def resnet20_case(w):
    net = CifarResNet(3)
    bns = [mod for _, mod in net.order if isinstance(mod, nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in bns:
            C = bn.num_features
            bn.weight.copy_(0.5 + torch.rand(C))
            bn.bias.copy_(0.2 * torch.randn(C))
            bn.momentum = 1.0  # running statistics := this batch's
        net.train()
        net(torch.randn(16, 3, 32, 32))
        for bn in bns:
            C = bn.num_features
            bn.running_mean += 0.1 * bn.running_var.sqrt() * torch.randn(C)
            bn.running_var *= 0.8 + 0.45 * torch.rand(C)
            bn.momentum = 0.1
        net.eval()
        x = torch.randn(2, 3, 32, 32)
        logits, gap = net(x)
    w.add("r20.x", x)
    for name, mod in net.order:
        for slot, t in node_params(mod):
            w.add(f"r20.{name}.{slot}", t)
    w.add("r20.logits", logits)
    w.add("r20.act.gap", gap)


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
    bn_cases(w)
    avgpool_cases(w)
    shortcut_cases(w)
    select_case(w)
    tiny_resnet_case(w)
    resnet20_case(w)
    conv_cases(w, "dconv", DCONV_SHAPES)
    w.write(sys.argv[1])
    print(f"torch_ref: wrote {len(w.names)} tensors to {sys.argv[1]} (torch {torch.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
