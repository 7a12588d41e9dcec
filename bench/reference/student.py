#!/usr/bin/python3
"""kdseg's `student` network in plain PyTorch: the in-run Python baseline of issue 9.

A line-for-line re-implementation of src/kdseg/models/student.cpp and blocks.cpp (the residual
UNet the authors released as their distilled student, docs/design.md §3 item 4):

  conv_in   conv3³ 4→w0, no bias            norm_in  GroupNorm(g, w0), affine, no activation
  encoder.l [down.(l-1): conv2³ stride 2 w(l-1)→w(l), no bias] + encoder_blocks[l] residual
            blocks  x + lrelu(GN(conv3³(lrelu(GN(conv3³(x))))))   (post-activation, slope 0.01)
  decoder.l (coarse → fine) up.l: 1×1 conv w(l+1)→w(l) then trilinear ×2 (align_corners=False),
            LeakyReLU, cat [skip, up], merge.l: 1×1 conv 2w(l)→w(l), decoder_blocks[l] blocks
  head      conv3³ w0→3 with bias → logits (sigmoid outside)

Parameter and module names are kdseg's state_dict names (conv_in.weight, encoder.1.0.conv1.weight,
down.0.weight, up.2.conv.weight, merge.0.weight, head.bias, ...), so a kdseg checkpoint's
`state_dict` loads here as is (load_kdseg_checkpoint). Convention of the count: every parameter
of the modules the forward uses; every conv bias-free except the head; GroupNorm affine.
Paper size (widths 16,32,64,128; blocks 1,2,2,4 / 1,1,1; GroupNorm 8): 4,509,939 parameters.

Runs with Debian's python3-torch 1.13 and with PyTorch 2.x.
  /usr/bin/python3 bench/reference/student.py                     # counts, paper and tiny
  /usr/bin/python3 bench/reference/student.py --kdseg build/kdseg # and compare with `kdseg models`
"""
import argparse
import json
import subprocess
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

# The paper-size configuration (kdseg's StudentOptions defaults) and the tiny CPU-test one
# (tests/models/tiny_configs.h). Missing keys take the paper value.
PAPER = {"in_channels": 4, "out_channels": 3, "widths": [16, 32, 64, 128],
         "encoder_blocks": [1, 2, 2, 4], "decoder_blocks": [1, 1, 1], "norm_groups": 8}
TINY = {"widths": [8, 8, 16, 16], "norm_groups": 4}


def resolve(config=None):
    """A full option dict: PAPER overridden by `config` (a dict or a JSON string)."""
    if isinstance(config, str):
        config = json.loads(config)
    opts = dict(PAPER)
    for k, v in (config or {}).items():
        if k not in PAPER:
            raise ValueError("student: unknown option %r (known: %s)" % (k, ", ".join(PAPER)))
        opts[k] = v
    return opts


def model_config(text):
    """--model-config: None → paper size, "tiny" → TINY, else a JSON object of options."""
    if not text:
        return None
    return TINY if text == "tiny" else json.loads(text)


def conv3d(cin, cout, kernel, stride=1, bias=False):
    """kdseg::conv3d: 'same' padding for odd kernels, none for kernel 2 stride 2."""
    return nn.Conv3d(cin, cout, kernel, stride=stride, padding=kernel // 2 if kernel % 2 else 0,
                     bias=bias)


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm computed in fp32 whatever the input (same parameters and names). Under bf16
    autocast CUDA does this by itself; CPU autocast in torch 1.13 does not, and would fail on a
    bf16 input with fp32 weights."""

    def forward(self, x):
        return F.group_norm(x.float(), self.num_groups, self.weight, self.bias, self.eps)


class ResBlock(nn.Module):
    """Post-activation residual block (blocks.cpp, pre_activation = false, leaky_relu)."""

    def __init__(self, channels, groups):
        super().__init__()
        self.conv1 = conv3d(channels, channels, 3)
        self.norm1 = GroupNorm(groups, channels, eps=1e-5, affine=True)
        self.conv2 = conv3d(channels, channels, 3)
        self.norm2 = GroupNorm(groups, channels, eps=1e-5, affine=True)

    def forward(self, x):  # (B,C,D,H,W) → same
        y = F.leaky_relu(self.norm1(self.conv1(x)), 0.01)
        y = F.leaky_relu(self.norm2(self.conv2(y)), 0.01)
        return x + y


class UpConv(nn.Module):
    """1×1×1 conv at the coarse resolution, then trilinear ×2 (the released code upsamples first:
    the same function, since a 1×1 conv commutes with trilinear interpolation)."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv = conv3d(cin, cout, 1)

    def forward(self, x):  # (B,in,D,H,W) → (B,out,2D,2H,2W)
        x = self.conv(x)
        return F.interpolate(x, size=[2 * s for s in x.shape[2:]], mode="trilinear",
                             align_corners=False)


class Student(nn.Module):
    def __init__(self, config=None):
        super().__init__()
        o = self.options = resolve(config)
        w, g = o["widths"], o["norm_groups"]
        n = len(w)
        if n < 2 or len(o["encoder_blocks"]) != n or len(o["decoder_blocks"]) != n - 1:
            raise ValueError("student: need >= 2 levels, one encoder_blocks entry per width and "
                             "one decoder_blocks entry per level but the deepest")
        for c in w:
            if c % g:
                raise ValueError("student: %d channels not divisible by %d groups" % (c, g))
        # Registration order = kdseg's, so named_parameters() lists the same names in the same order.
        self.conv_in = conv3d(o["in_channels"], w[0], 3)
        self.norm_in = GroupNorm(g, w[0], eps=1e-5, affine=True)
        self.encoder = nn.ModuleList()
        self.down = nn.ModuleList()
        for l in range(n):
            if l > 0:
                self.down.append(conv3d(w[l - 1], w[l], 2, stride=2))
            self.encoder.append(nn.Sequential(*[ResBlock(w[l], g) for _ in range(o["encoder_blocks"][l])]))
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for l in range(n - 1):
            self.up.append(UpConv(w[l + 1], w[l]))
            self.merge.append(conv3d(2 * w[l], w[l], 1))
            self.decoder.append(nn.Sequential(*[ResBlock(w[l], g) for _ in range(o["decoder_blocks"][l])]))
        self.head = conv3d(w[0], o["out_channels"], 3, bias=True)

    def stride(self):
        return 1 << (len(self.options["widths"]) - 1)

    def encode(self, x):  # (B,4,D,H,W) → skips, finest first; the last is the bottleneck
        features = []
        h = self.norm_in(self.conv_in(x))  # no activation (as released)
        for l, stage in enumerate(self.encoder):
            if l > 0:
                h = self.down[l - 1](h)
            h = stage(h)
            features.append(h)
        return features

    def decode(self, features):  # → logits (B,3,D,H,W)
        h = features[-1]
        for i in reversed(range(len(self.decoder))):
            h = F.leaky_relu(self.up[i](h), 0.01)
            h = self.merge[i](torch.cat([features[i], h], 1))
            h = self.decoder[i](h)
        return self.head(h)

    def forward(self, x):
        s = self.stride()
        if x.dim() != 5 or x.shape[1] != self.options["in_channels"] or any(d % s for d in x.shape[2:]):
            raise ValueError("student: expected (B,%d,D,H,W) with D,H,W multiples of %d, got %s"
                             % (self.options["in_channels"], s, tuple(x.shape)))
        return self.decode(self.encode(x))


def count_parameters(model):
    return sum(p.numel() for p in model.parameters())


def expected_count(config=None):
    """The closed form of tests/models/test_models.cpp (StudentCountMatchesItsDescription)."""
    o = resolve(config)
    w, cin, cout = o["widths"], o["in_channels"], o["out_channels"]
    block = lambda c: 54 * c * c + 4 * c  # two conv3³ c→c + two affine GroupNorms
    n = cin * w[0] * 27 + 2 * w[0]
    for l in range(len(w)):
        if l > 0:
            n += w[l - 1] * w[l] * 8
        n += o["encoder_blocks"][l] * block(w[l])
    for l in range(len(w) - 1):
        n += w[l + 1] * w[l] + 2 * w[l] * w[l] + o["decoder_blocks"][l] * block(w[l])
    return n + w[0] * cout * 27 + cout


def load_kdseg_checkpoint(path, map_location="cpu"):
    """A Student with the weights of a kdseg checkpoint (docs/design.md §2: a pickled dict with
    `arch`, `config` (JSON text) and `state_dict`). torch.load: only for the files the bench itself
    wrote; kdseg.load reads any checkpoint without running it (docs/checkpoint.md)."""
    ckpt = torch.load(path, map_location=map_location)
    if ckpt.get("arch") != "student":
        raise ValueError("%s: arch is %r, not 'student'" % (path, ckpt.get("arch")))
    config = json.loads(ckpt["config"]) if isinstance(ckpt["config"], str) else ckpt["config"]
    arch_options = config.get("model", config.get("options", config))
    arch_options = {k: v for k, v in arch_options.items() if k in PAPER}
    model = Student(arch_options)
    model.load_state_dict(ckpt["state_dict"])
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kdseg", help="a kdseg binary: check the paper count against `kdseg models --json`")
    ap.add_argument("--names", action="store_true", help="print the state_dict names and shapes")
    args = ap.parse_args()
    ok = True
    for label, cfg in (("paper", None), ("tiny", TINY)):
        m = Student(cfg)
        n, e = count_parameters(m), expected_count(cfg)
        ok &= n == e
        print("student %-5s %9d parameters (closed form %d)%s" % (label, n, e, "" if n == e else "  MISMATCH"))
        x = torch.zeros(1, 4, 16, 16, 16)
        with torch.no_grad():
            assert m(x).shape == (1, 3, 16, 16, 16)
    if args.names:
        for k, v in Student().state_dict().items():
            print("  %-32s %s" % (k, tuple(v.shape)))
    if args.kdseg:
        archs = json.loads(subprocess.run([args.kdseg, "models", "--json"], check=True,
                                          capture_output=True, text=True).stdout)
        ref = next(a for a in archs if a["name"] == "student")
        n = count_parameters(Student(ref["config"]))
        ok &= n == ref["n_parameters"]
        print("kdseg models: student %d parameters; Python %d: %s"
              % (ref["n_parameters"], n, "match" if n == ref["n_parameters"] else "MISMATCH"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
