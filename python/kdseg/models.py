"""The five kdseg architectures in plain PyTorch, mirroring src/kdseg/models/*.cpp.

Every network takes (B,4,D,H,W) (T1, T1ce, T2, FLAIR; D, H, W multiples of `stride()`) and
`forward` returns LOGITS (B,3,D,H,W), channels WT, TC, ET: sigmoid(logits) are the region
probabilities. That is what kdseg's inference reads (infer/ensemble.cpp:
sigmoid(net.forward(batch).logits)). The extra outputs of the C++ forward are separate methods:

  resunet-vae  the VAE branch runs in C++ only in training mode; here `vae_reconstruct(bottleneck)`
               gives (recon, mu, logvar) and forward is the plain resunet in both modes.
  cascade      `forward_all(x)` gives every net's logits, coarsest first (C++ SegOutput::deep
               followed by the full-scale logits); forward returns the last, the full-scale net's.

Options are the C++ options structs as dicts: a missing key keeps the C++ default, an unknown key
is an error (as JsonOptionsReader). Module and parameter names equal the C++ state_dict names.
"""
import json

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import (ConvNormAct, Norm, UpConv, activate, check_divisible, check_input, conv3d,
                     res_stage, ResBlock)

# The C++ options structs' defaults (the paper sizes), per architecture.
DEFAULTS = {
    "unet": {"in_channels": 4, "out_channels": 3, "widths": [30, 60, 120, 240, 480]},
    "resunet": {"in_channels": 4, "out_channels": 3, "widths": [16, 32, 64, 128],
                "encoder_blocks": [1, 2, 2, 4], "decoder_blocks": [1, 1, 1], "norm_groups": 8,
                "dropout": 0.2, "vae_input_shape": [144, 144, 128], "vae_latent": 128,
                "vae_channels": 16},
    "cascade": {"in_channels": 4, "out_channels": 3, "base_features": 4, "encoder_multiplier": 2,
                "n_scales": 3, "depth": 4, "dropout": 0.1},
    "student": {"in_channels": 4, "out_channels": 3, "widths": [16, 32, 64, 128],
                "encoder_blocks": [1, 2, 2, 4], "decoder_blocks": [1, 1, 1], "norm_groups": 8},
}
DEFAULTS["resunet-vae"] = DEFAULTS["resunet"]

ARCHITECTURES = ("unet", "resunet", "resunet-vae", "cascade", "student")  # `kdseg models` order


def resolve_options(arch, options=None):
    """The full options of `arch`: the C++ defaults overridden by `options` (a dict, JSON text or
    None). Raises ValueError for an unknown architecture or option."""
    if arch not in DEFAULTS:
        raise ValueError("unknown architecture %r; known architectures: %s"
                         % (arch, ", ".join(ARCHITECTURES)))
    if isinstance(options, str):
        options = json.loads(options)
    resolved = dict(DEFAULTS[arch])
    unknown = [k for k in (options or {}) if k not in resolved]
    if unknown:
        raise ValueError("%s options: unknown option(s): %s; known options: %s"
                         % (arch, ", ".join(unknown), ", ".join(sorted(resolved))))
    resolved.update(options or {})
    return resolved


def _check_levels(arch, o):
    n = len(o["widths"])
    if n < 2 or len(o["encoder_blocks"]) != n or len(o["decoder_blocks"]) != n - 1:
        raise ValueError("%s: need at least 2 levels, one encoder_blocks entry per width and one "
                         "decoder_blocks entry per level but the deepest, e.g. widths "
                         "[16,32,64,128], encoder_blocks [1,2,2,4], decoder_blocks [1,1,1]" % arch)
    for c in o["widths"]:
        check_divisible(c, o["norm_groups"], arch, "GroupNorm")


def encode_levels(h, stages, downs):
    """The encoder of the residual nets: level l is downs[l-1] (a stride-2 conv) then stages[l];
    returns every level's output, finest first (B,w[l],D/2^l,H/2^l,W/2^l)."""
    features = []
    for l, stage in enumerate(stages):
        if l > 0:
            h = downs[l - 1](h)
        h = stage(h)
        features.append(h)
    return features


class UNet(nn.Module):
    """`unet`: the No-New-Net 3D UNet (Isensee 2018), unet.cpp.

    encoder level l: two conv3³ → InstanceNorm → LeakyReLU(0.01), the first strided 2 below the
    top; decoder level l (coarse → fine): up.l 1×1 conv w(l+1)→w(l) + trilinear ×2,
    cat [skip, up], two conv3³ → IN → LeakyReLU; head 1×1 conv w0→3 with bias."""

    arch = "unet"

    def __init__(self, options=None):
        super().__init__()
        o = self.options = resolve_options("unet", options)
        w = o["widths"]
        if len(w) < 2:
            raise ValueError("unet: need at least 2 levels, e.g. widths [30,60,120,240,480]")

        def stage(cin, cout, stride):
            return nn.Sequential(ConvNormAct(cin, cout, 3, stride, False, 0, "leaky_relu"),
                                 ConvNormAct(cout, cout, 3, 1, False, 0, "leaky_relu"))

        self.encoder = nn.ModuleList(
            [stage(o["in_channels"], w[0], 1)] + [stage(w[l - 1], w[l], 2) for l in range(1, len(w))])
        self.up = nn.ModuleList([UpConv(w[l + 1], w[l]) for l in range(len(w) - 1)])
        self.decoder = nn.ModuleList([stage(2 * w[l], w[l], 1) for l in range(len(w) - 1)])
        self.head = conv3d(w[0], o["out_channels"], 1, 1, True)

    def stride(self):
        return 1 << (len(self.options["widths"]) - 1)

    def encode(self, x):  # → features per level, finest first; the last is the bottleneck
        features, h = [], x
        for stage in self.encoder:
            h = stage(h)  # (B,w[l],D/2^l,H/2^l,W/2^l)
            features.append(h)
        return features

    def decode(self, features):  # → logits (B,3,D,H,W)
        h = features[-1]
        for i in reversed(range(len(self.decoder))):
            h = self.up[i](h)  # (B,w[i],D/2^i,...)
            h = self.decoder[i](torch.cat([features[i], h], 1))
        return self.head(h)

    def forward(self, x):  # (B,4,D,H,W) → logits (B,3,D,H,W)
        check_input(x, self.options["in_channels"], self.stride(), self.arch)
        return self.decode(self.encode(x))


class ResUNet(nn.Module):
    """`resunet` / `resunet-vae`: Myronenko's asymmetric residual UNet (BraTS 2018), resunet.cpp.

    conv_in conv3³ 4→w0, spatial dropout; encoder level l: [down.(l-1) conv3³ stride 2] +
    pre-activation residual blocks GN → ReLU → conv3³ (twice) + identity; decoder level l:
    up.l (1×1 conv + trilinear ×2) ADD the skip, residual blocks; head GN → ReLU → 1×1 conv (+bias).
    With vae=True the VAE branch's modules exist (so the weights load) and `vae_reconstruct` runs
    it; `forward` always returns the segmentation logits only."""

    def __init__(self, options=None, vae=False):
        super().__init__()
        self.arch = "resunet-vae" if vae else "resunet"
        o = self.options = resolve_options(self.arch, options)
        self.vae = vae
        _check_levels(self.arch, o)
        w, g = o["widths"], o["norm_groups"]
        n = len(w)
        block = dict(norm_groups=g, act="relu", pre_activation=True, bias=False)

        self.conv_in = conv3d(o["in_channels"], w[0], 3, 1, False)
        self.encoder = nn.ModuleList([res_stage(o["encoder_blocks"][l], w[l], **block)
                                      for l in range(n)])
        self.down = nn.ModuleList([conv3d(w[l - 1], w[l], 3, 2, False) for l in range(1, n)])
        self.up = nn.ModuleList([UpConv(w[l + 1], w[l]) for l in range(n - 1)])
        self.decoder = nn.ModuleList([res_stage(o["decoder_blocks"][l], w[l], **block)
                                      for l in range(n - 1)])
        self.head_norm = Norm(w[0], g)
        self.head = conv3d(w[0], o["out_channels"], 1, 1, True)
        if not vae:
            return

        s2 = 2 * self.stride()
        shape = o["vae_input_shape"]
        if any(s <= 0 or s % s2 for s in shape):
            raise ValueError("%s: vae_input_shape %s is not a multiple of %d (twice the network "
                             "stride), e.g. [144,144,128] or [32,32,32]" % (self.arch, shape, s2))
        self.vae_grid = [s // s2 for s in shape]  # (D,H,W) of the dense layer's grid
        vc, bottom = o["vae_channels"], w[-1]
        n_flat = vc * self.vae_grid[0] * self.vae_grid[1] * self.vae_grid[2]
        self.vae_norm = Norm(bottom, g)
        self.vae_conv = conv3d(bottom, vc, 3, 2, True)
        self.vae_mu = nn.Linear(n_flat, o["vae_latent"])
        self.vae_logvar = nn.Linear(n_flat, o["vae_latent"])
        self.vae_fc = nn.Linear(o["vae_latent"], n_flat)
        # vae_up.0: (B,vc,D/2s,...) → (B,w[L-1],D/s,...); then one level up per encoder level.
        self.vae_up = nn.ModuleList([UpConv(vc, bottom)] +
                                    [UpConv(w[i + 1], w[i]) for i in reversed(range(n - 1))])
        self.vae_decoder = nn.ModuleList([res_stage(1, w[i], **block)
                                          for i in reversed(range(n - 1))])
        self.vae_head_norm = Norm(w[0], g)
        self.vae_head = conv3d(w[0], o["in_channels"], 1, 1, True)

    def stride(self):
        return 1 << (len(self.options["widths"]) - 1)

    def encode(self, x):  # → features per level, finest first
        h = self.conv_in(x)  # (B,w0,D,H,W)
        if self.options["dropout"] > 0:
            h = F.dropout3d(h, self.options["dropout"], self.training)
        return encode_levels(h, self.encoder, self.down)

    def decode(self, features):  # → logits (B,3,D,H,W)
        h = features[-1]
        for i in reversed(range(len(self.decoder))):
            h = self.up[i](h) + features[i]  # (B,w[i],D/2^i,...)
            h = self.decoder[i](h)
        return self.head(activate(self.head_norm(h), "relu"))

    def vae_reconstruct(self, bottleneck):
        """The VAE branch: bottleneck (B,w[L-1],D/s,H/s,W/s), the last of encode(x) at
        vae_input_shape → (recon (B,4,D,H,W), mu (B,Z), logvar (B,Z)); z is sampled."""
        if not self.vae:
            raise ValueError("resunet has no VAE branch (build resunet-vae)")
        h = self.vae_conv(activate(self.vae_norm(bottleneck), "relu"))  # (B,vc,D/2s,H/2s,W/2s)
        h = h.flatten(1)
        mu, logvar = self.vae_mu(h), self.vae_logvar(h)  # (B,Z)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        h = torch.relu(self.vae_fc(z)).view(bottleneck.shape[0], self.options["vae_channels"],
                                            *self.vae_grid)
        h = self.vae_up[0](h)  # (B,w[L-1],D/s,...)
        for k, stage in enumerate(self.vae_decoder):
            h = stage(self.vae_up[k + 1](h))  # up one level, one residual block
        recon = self.vae_head(activate(self.vae_head_norm(h), "relu"))  # (B,4,D,H,W)
        return recon, mu, logvar

    def forward(self, x):  # (B,4,D,H,W) → logits (B,3,D,H,W)
        check_input(x, self.options["in_channels"], self.stride(), self.arch)
        return self.decode(self.encode(x))


class CascadeNet(nn.Module):
    """One UNet of the cascade (cascade.cpp, CascadeNetImpl): per-modality encoders as grouped
    convs (conv_in, pre-activation InstanceNorm residual blocks with conv2 bias, down.l conv3³
    stride 2 with bias, dropout), merged per level by the maximum over modalities; decoder level l:
    up.l transposed conv 2³ stride 2 (no bias), cat [up, merged skip, coarser nets'
    probabilities], fuse.l 1×1 conv (+bias), one residual block; head 1×1 conv (+bias)."""

    def __init__(self, in_channels=4, out_channels=3, features=4, encoder_multiplier=2, depth=4,
                 dropout=0.1, side_levels=()):
        super().__init__()
        n_mod, f, L = in_channels, features, depth
        if L < 2 or f < 1 or encoder_multiplier < 1:
            raise ValueError("cascade: need depth >= 2, features >= 1 and encoder_multiplier >= 1")
        self.n_mod, self.dropout, self.side_levels = n_mod, dropout, list(side_levels)

        def enc_width(l):  # E(l), all modalities
            return (2 * f * encoder_multiplier) << l

        def dec_width(l):  # D(l)
            return (2 * f) << l

        check_divisible(enc_width(0), n_mod, "cascade", "per-modality encoders")
        for l in self.side_levels:
            if l < 0 or l > L - 2:
                raise ValueError("cascade: a coarser net's output cannot enter decoder level %d of "
                                 "a net of depth %d; use depth >= n_scales" % (l, L))
        block = dict(norm_groups=0, act="relu", pre_activation=True, bias=True)

        self.conv_in = conv3d(n_mod, enc_width(0), 3, 1, True, n_mod)
        self.encoder = nn.ModuleList([ResBlock(enc_width(l), conv_groups=n_mod, **block)
                                      for l in range(L)])
        self.down = nn.ModuleList([conv3d(enc_width(l), enc_width(l + 1), 3, 2, True, n_mod)
                                   for l in range(L - 1)])
        self.up = nn.ModuleList()
        self.fuse = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for l in range(L - 1):
            cin = enc_width(L - 1) // n_mod if l + 2 == L else dec_width(l + 1)
            self.up.append(nn.ConvTranspose3d(cin, dec_width(l), 2, stride=2, bias=False))
            n_side = self.side_levels.count(l)
            cat = dec_width(l) + enc_width(l) // n_mod + n_side * out_channels
            self.fuse.append(conv3d(cat, dec_width(l), 1, 1, True))
            self.decoder.append(ResBlock(dec_width(l), **block))
        self.head = conv3d(dec_width(0), out_channels, 1, 1, True)

    def encode(self, x):  # → merged features per level, finest first (B,E(l)/n_mod,D/2^l,...)
        merged = []
        h = self.conv_in(x)  # (B,E0,D,H,W): E0/n_mod channels per modality
        for l, block in enumerate(self.encoder):
            h = block(h)  # (B,E(l),D/2^l,...), grouped: modalities stay apart
            b, c, d, hh, w = h.shape
            merged.append(h.view(b, self.n_mod, c // self.n_mod, d, hh, w).max(1)[0])
            if l < len(self.down):
                h = self.down[l](h)  # (B,E(l+1),D/2^(l+1),...)
                if self.dropout > 0:
                    h = F.dropout(h, self.dropout, self.training)
        return merged

    def decode(self, features, side):  # → logits (B,3,D,H,W)
        h = features[-1]
        for i in reversed(range(len(self.decoder))):
            parts = [self.up[i](h), features[i]]  # (B,D(i),...), (B,M(i),...)
            parts += [s for level, s in zip(self.side_levels, side) if level == i]
            h = self.decoder[i](self.fuse[i](torch.cat(parts, 1)))  # (B,D(i),D/2^i,...)
        return self.head(h)

    def forward(self, x, side):
        """x (B,4,D,H,W); side[i] (B,3,D/2^l,...) for l = side_levels[i] → logits (B,3,D,H,W)."""
        if len(side) != len(self.side_levels):
            raise ValueError("cascade: expected %d coarser outputs, got %d"
                             % (len(self.side_levels), len(side)))
        return self.decode(self.encode(x), side)


class Cascade(nn.Module):
    """`cascade`: Lachinov's cascaded multi-encoder UNet (BraTS 2018), cascade.cpp.

    nets.k runs on the input average-pooled by 2^k with base_features·2^k features; coarsest
    first, each net's sigmoid probabilities enter every finer net's decoder at their resolution.
    forward returns the full-scale net's logits; forward_all every net's."""

    arch = "cascade"

    def __init__(self, options=None):
        super().__init__()
        o = self.options = resolve_options("cascade", options)
        if o["n_scales"] < 1 or o["depth"] < max(2, o["n_scales"]):
            raise ValueError("cascade: need n_scales >= 1 and depth >= max(2, n_scales), got "
                             "n_scales %d, depth %d" % (o["n_scales"], o["depth"]))
        self.nets = nn.ModuleList([
            CascadeNet(o["in_channels"], o["out_channels"], o["base_features"] << k,
                       o["encoder_multiplier"], o["depth"], o["dropout"],
                       side_levels=[j - k for j in range(k + 1, o["n_scales"])])
            for k in range(o["n_scales"])])

    def stride(self):
        return (1 << (self.options["depth"] - 1)) << (self.options["n_scales"] - 1)

    def forward_all(self, x):
        """(B,4,D,H,W) → every net's logits, coarsest first: (B,3,D/2^(n-1),...), ...,
        (B,3,D/2,...), (B,3,D,H,W). The C++ SegOutput has deep = all but the last, logits = last."""
        check_input(x, self.options["in_channels"], self.stride(), self.arch)
        n = len(self.nets)
        logits = [None] * n
        for k in reversed(range(n)):  # coarsest first
            xk = x if k == 0 else F.avg_pool3d(x, 1 << k)  # (B,4,D/2^k,...)
            side = [torch.sigmoid(logits[j]) for j in range(k + 1, n)]  # (B,3,D/2^j,...)
            logits[k] = self.nets[k](xk, side)
        return logits[::-1]

    def forward(self, x):  # (B,4,D,H,W) → logits (B,3,D,H,W) of the full-scale net
        return self.forward_all(x)[-1]


class Student(nn.Module):
    """`student`: the residual UNet released as the distilled student (Lachinov 2019), student.cpp.

    conv_in conv3³ 4→w0 + norm_in GroupNorm, no activation; encoder level l: [down.(l-1) conv2³
    stride 2] + post-activation residual blocks (conv3³ → GN → LeakyReLU, twice, + identity);
    decoder level l: up.l (1×1 conv + trilinear ×2), LeakyReLU, cat [skip, up], merge.l 1×1 conv
    2w→w, residual blocks; head conv3³ w0→3 with bias. Only the head has a bias."""

    arch = "student"

    def __init__(self, options=None):
        super().__init__()
        o = self.options = resolve_options("student", options)
        _check_levels(self.arch, o)
        w, g = o["widths"], o["norm_groups"]
        n = len(w)
        block = dict(norm_groups=g, act="leaky_relu", pre_activation=False, bias=False)

        self.conv_in = conv3d(o["in_channels"], w[0], 3, 1, False)
        self.norm_in = Norm(w[0], g)
        self.encoder = nn.ModuleList([res_stage(o["encoder_blocks"][l], w[l], **block)
                                      for l in range(n)])
        self.down = nn.ModuleList([conv3d(w[l - 1], w[l], 2, 2, False) for l in range(1, n)])
        self.up = nn.ModuleList([UpConv(w[l + 1], w[l]) for l in range(n - 1)])
        self.merge = nn.ModuleList([conv3d(2 * w[l], w[l], 1, 1, False) for l in range(n - 1)])
        self.decoder = nn.ModuleList([res_stage(o["decoder_blocks"][l], w[l], **block)
                                      for l in range(n - 1)])
        self.head = conv3d(w[0], o["out_channels"], 3, 1, True)

    def stride(self):
        return 1 << (len(self.options["widths"]) - 1)

    def encode(self, x):  # → skips, finest first; the last is the bottleneck
        h = self.norm_in(self.conv_in(x))  # (B,w0,D,H,W), no activation (as released)
        return encode_levels(h, self.encoder, self.down)

    def decode(self, features):  # → logits (B,3,D,H,W)
        h = features[-1]  # bottleneck (B,w[L-1],D/2^(L-1),...)
        for i in reversed(range(len(self.decoder))):
            h = activate(self.up[i](h), "leaky_relu")  # (B,w[i],D/2^i,...)
            h = self.merge[i](torch.cat([features[i], h], 1))  # (B,2w[i],...) → (B,w[i],...)
            h = self.decoder[i](h)
        return self.head(h)

    def forward(self, x):  # (B,4,D,H,W) → logits (B,3,D,H,W)
        check_input(x, self.options["in_channels"], self.stride(), self.arch)
        return self.decode(self.encode(x))


def build_model(arch, options=None):
    """The network `arch` ("unet", "resunet", "resunet-vae", "cascade" or "student") built from its
    options (dict, JSON text or None for the paper size), float32 on the CPU, as make_net does."""
    if arch == "unet":
        return UNet(options)
    if arch in ("resunet", "resunet-vae"):
        return ResUNet(options, vae=arch == "resunet-vae")
    if arch == "cascade":
        return Cascade(options)
    if arch == "student":
        return Student(options)
    raise ValueError("unknown architecture %r; known architectures: %s"
                     % (arch, ", ".join(ARCHITECTURES)))
