"""The one set of blocks the five networks are built from: src/kdseg/models/blocks.{h,cpp}.

Tensors are (B,C,D,H,W). Module and parameter names are the C++ ones (Conv3d: weight[, bias];
norms: weight, bias), so a kdseg checkpoint's state_dict loads with load_state_dict(strict=True).

What the C++ does for speed and memory and this file does not, because the function is the same:
activations in place; its own trilinear ×2 kernel on the CPU (the taps of LibTorch's
align_corners=False, which F.interpolate computes here); narrow_conv3d, which in eval mode hands
the convolution to LibTorch's conv3d(padding 1) anyway; a bf16 GroupNorm kernel (fp32 only here).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

LEAKY_SLOPE = 0.01  # kdseg's Act::leaky_relu (Isensee; the student)


def activate(x, act):
    """act is "relu" or "leaky_relu" (slope 0.01)."""
    return F.relu(x) if act == "relu" else F.leaky_relu(x, LEAKY_SLOPE)


def conv3d(cin, cout, kernel, stride=1, bias=False, groups=1):
    """kdseg::conv3d: "same" padding for odd kernels (kernel 2 stride 2 pads nothing)."""
    padding = kernel // 2 if kernel % 2 == 1 else 0
    return nn.Conv3d(cin, cout, kernel, stride=stride, padding=padding, bias=bias, groups=groups)


def upsample2x(x):
    """Trilinear ×2, align_corners=False: (B,C,D,H,W) → (B,C,2D,2H,2W)."""
    size = [2 * s for s in x.shape[2:]]
    return F.interpolate(x, size=size, mode="trilinear", align_corners=False)


class Norm(nn.Module):
    """Affine GroupNorm(groups), or InstanceNorm when groups == 0 (one group per channel, the maths
    of InstanceNorm3d(affine=True) without running statistics). Parameters weight (1), bias (0)."""

    def __init__(self, channels, groups=8, eps=1e-5):
        super().__init__()
        if groups < 0 or (groups > 0 and channels % groups != 0):
            raise ValueError("Norm: %d channels cannot be split into %d groups" % (channels, groups))
        self.channels, self.groups, self.eps = channels, groups, eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):  # (B,C,D,H,W) → same
        groups = self.groups if self.groups > 0 else self.channels
        # The ATen op, as the C++ calls it: F.group_norm refuses one value per group (e.g. the
        # cascade's coarsest bottleneck at a 32³ input), which the C++ network accepts.
        return torch.group_norm(x, groups, self.weight, self.bias, self.eps)


class ConvNormAct(nn.Module):
    """conv (k³, stride s) → norm → activation: one stage conv of the No-New-Net UNet."""

    def __init__(self, cin, cout, kernel=3, stride=1, bias=False, norm_groups=0, act="leaky_relu"):
        super().__init__()
        self.act = act
        self.conv = conv3d(cin, cout, kernel, stride, bias)
        self.norm = Norm(cout, norm_groups)

    def forward(self, x):  # (B,in,D,H,W) → (B,out,D/s,H/s,W/s)
        return activate(self.norm(self.conv(x)), self.act)


class ResBlock(nn.Module):
    """Residual block with identity shortcut, two conv3³ c→c:

      post-activation (student):            x + act(norm2(conv2(act(norm1(conv1(x))))))
      pre-activation (Myronenko; Lachinov): x + conv2(act(norm2(conv1(act(norm1(x))))))

    bias: pre-activation only, a bias on conv2 (the cascade). conv_groups > 1: grouped convs, one
    group per modality encoder (the cascade)."""

    def __init__(self, channels, norm_groups=8, act="leaky_relu", pre_activation=False,
                 bias=False, conv_groups=1):
        super().__init__()
        self.act, self.pre_activation = act, pre_activation
        c = channels
        self.conv1 = conv3d(c, c, 3, 1, False, conv_groups)
        self.norm1 = Norm(c, norm_groups)
        self.conv2 = conv3d(c, c, 3, 1, pre_activation and bias, conv_groups)
        self.norm2 = Norm(c, norm_groups)

    def forward(self, x):  # (B,C,D,H,W) → same
        if self.pre_activation:
            y = self.conv1(activate(self.norm1(x), self.act))
            y = self.conv2(activate(self.norm2(y), self.act))
            return x + y
        y = activate(self.norm1(self.conv1(x)), self.act)
        y = activate(self.norm2(self.conv2(y)), self.act)
        return x + y


def res_stage(n_blocks, channels, **block_options):
    """n residual blocks in a row (state_dict names "0.conv1.weight", "1.conv1.weight", ...)."""
    return nn.Sequential(*[ResBlock(channels, **block_options) for _ in range(n_blocks)])


class UpConv(nn.Module):
    """1×1×1 conv (in → out) at the coarse resolution, then trilinear ×2."""

    def __init__(self, cin, cout, bias=False):
        super().__init__()
        self.conv = conv3d(cin, cout, 1, 1, bias)

    def forward(self, x):  # (B,in,D,H,W) → (B,out,2D,2H,2W)
        return upsample2x(self.conv(x))


def check_input(x, in_channels, stride, arch):
    """Raises ValueError unless x is (B, in_channels, D, H, W) with D, H, W positive multiples of
    `stride`, naming the architecture and a size that would do."""
    if x.dim() != 5:
        raise ValueError("%s: expected a 5-D input (B,C,D,H,W), got %s" % (arch, tuple(x.shape)))
    if x.shape[1] != in_channels:
        raise ValueError("%s: expected %d input channels (T1, T1ce, T2, FLAIR), got %d"
                         % (arch, in_channels, x.shape[1]))
    spatial = list(x.shape[2:])
    if any(s <= 0 or s % stride for s in spatial):
        up = [max(stride, -(-s // stride) * stride) for s in spatial]
        raise ValueError("%s: input size %s (D,H,W) is not a multiple of the network's total "
                         "stride %d; pad or crop each side to a multiple of %d, e.g. %s"
                         % (arch, "x".join(map(str, spatial)), stride, stride,
                            "x".join(map(str, up))))


def check_divisible(channels, groups, arch, what):
    """Raises ValueError (naming `arch`) unless `channels` is divisible by `groups` (> 0)."""
    if groups <= 0 or channels % groups != 0:
        raise ValueError("%s: %s: %d channels are not divisible by %d; choose widths that are "
                         "multiples of %d" % (arch, what, channels, groups, groups))
