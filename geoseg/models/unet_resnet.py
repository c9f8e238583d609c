"""U-Nets on ResNet and ResNeXt encoders in plain torch, for prediction without segmentation-models-pytorch.

Importing segmentation-models-pytorch imports timm and torchvision, and torchvision's detection ops import
torch's compiler: seconds before a torch engine predicts its first tile, for code prediction never runs. The
architecture geoseg's pipelines train — smp's ``Unet`` on a ResNet or ResNeXt encoder with a batch-normalised
(or plain) decoder, no attention, no auxiliary head — is rebuilt here with the same parameter names and
shapes and the same operations in the same order, so a checkpoint's weights load unchanged and predict the
same numbers. Any other model is built by segmentation-models-pytorch; training always is.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: Encoder name → (block, blocks per stage, groups, width per group), as torchvision defines these ResNets
#: and smp's ``resnet_encoders`` uses them.
ENCODERS: dict[str, tuple[str, tuple[int, int, int, int], int, int]] = {
    "resnet18": ("basic", (2, 2, 2, 2), 1, 64),
    "resnet34": ("basic", (3, 4, 6, 3), 1, 64),
    "resnet50": ("bottleneck", (3, 4, 6, 3), 1, 64),
    "resnet101": ("bottleneck", (3, 4, 23, 3), 1, 64),
    "resnet152": ("bottleneck", (3, 8, 36, 3), 1, 64),
    "resnext50_32x4d": ("bottleneck", (3, 4, 6, 3), 32, 4),
    "resnext101_32x4d": ("bottleneck", (3, 4, 23, 3), 32, 4),
    "resnext101_32x8d": ("bottleneck", (3, 4, 23, 3), 32, 8),
    "resnext101_32x16d": ("bottleneck", (3, 4, 23, 3), 32, 16),
    "resnext101_32x32d": ("bottleneck", (3, 4, 23, 3), 32, 32),
    "resnext101_32x48d": ("bottleneck", (3, 4, 23, 3), 32, 48),
}

#: smp ``Unet``'s defaults for the keys this module reads.
_DEFAULTS: dict[str, Any] = {
    "encoder_depth": 5, "decoder_channels": (256, 128, 64, 32, 16), "decoder_use_norm": "batchnorm",
    "decoder_attention_type": None, "decoder_interpolation": "nearest", "in_channels": 3, "classes": 1,
    "activation": None, "aux_params": None, "encoder_weights": None,
}
_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "area", "nearest-exact")


def supports(architecture: str, model_config: dict[str, Any]) -> bool:
    """Whether ``architecture`` with ``model_config`` (smp's keyword arguments) is a model this module
    builds exactly; anything else, including configs smp itself would refuse, is left to smp."""
    config = dict(model_config)
    if architecture.lower() != "unet" or config.get("encoder_name") not in ENCODERS:
        return False
    if set(config) - set(_DEFAULTS) - {"encoder_name", "decoder_use_batchnorm"}:
        return False
    depth = config.get("encoder_depth", _DEFAULTS["encoder_depth"])
    channels = config.get("decoder_channels", _DEFAULTS["decoder_channels"])
    return (_positive_int(depth) and 1 <= depth <= 5
            and isinstance(channels, (list, tuple)) and len(channels) == depth
            and all(_positive_int(c) for c in channels)
            and _positive_int(config.get("in_channels", 3)) and _positive_int(config.get("classes", 1))
            and _norm(config) is not None
            and config.get("decoder_attention_type") is None
            and config.get("decoder_interpolation", "nearest") in _INTERPOLATIONS
            and config.get("activation") is None and config.get("aux_params") is None)


def build(model_config: dict[str, Any]) -> nn.Module:
    """The U-Net ``model_config`` describes (checked with :func:`supports` first), untrained, its parameter
    names those of smp's ``Unet``."""
    config = {**_DEFAULTS, **model_config}
    block, layers, groups, width = ENCODERS[config["encoder_name"]]
    encoder = _ResNetEncoder(int(config["in_channels"]), block, layers, groups, width,
                             int(config["encoder_depth"]))
    decoder = _UnetDecoder(encoder.channels, [int(c) for c in config["decoder_channels"]],
                           bool(_norm(config)), config["decoder_interpolation"])
    head = nn.Sequential(nn.Conv2d(int(config["decoder_channels"][-1]), int(config["classes"]), 3, padding=1),
                         nn.Identity(), nn.Identity())
    return _Unet(encoder, decoder, head)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _norm(config: dict[str, Any]) -> bool | None:
    """True for a batch-normalised decoder, False for a plain one, None for another normalisation (smp's)."""
    value = config.get("decoder_use_batchnorm", config.get("decoder_use_norm", "batchnorm"))
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("batchnorm", "identity"):
        return value.lower() == "batchnorm"
    return None


class _Unet(nn.Module):
    def __init__(self, encoder: nn.Module, decoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder, self.decoder, self.segmentation_head = encoder, decoder, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.segmentation_head(self.decoder(self.encoder(x)))


def _conv_bn(inputs: int, outputs: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(inputs, outputs, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(outputs)]


class _BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inputs: int, planes: int, stride: int, groups: int, width: int):
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(inputs, planes, 3, stride)
        self.relu = nn.ReLU(inplace=True)
        self.conv2, self.bn2 = _conv_bn(planes, planes, 3)
        self.downsample = _downsample(inputs, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inputs: int, planes: int, stride: int, groups: int, width: int):
        super().__init__()
        inner = int(planes * (width / 64.0)) * groups
        self.conv1, self.bn1 = _conv_bn(inputs, inner, 1)
        self.conv2, self.bn2 = _conv_bn(inner, inner, 3, stride, groups)
        self.conv3, self.bn3 = _conv_bn(inner, planes * 4, 1)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(inputs, planes * 4, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)


def _downsample(inputs: int, outputs: int, stride: int) -> nn.Module | None:
    return nn.Sequential(*_conv_bn(inputs, outputs, 1, stride)) if stride != 1 or inputs != outputs else None


class _ResNetEncoder(nn.Module):
    """torchvision's ResNet without its classifier, returning the input and each stage's features up to
    ``depth`` (all four stages exist, as in smp, so the weights' names do not depend on the depth)."""

    def __init__(self, in_channels: int, block: str, layers: tuple[int, int, int, int], groups: int,
                 width: int, depth: int):
        super().__init__()
        kind = _BasicBlock if block == "basic" else _Bottleneck
        self.depth = depth
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inputs, stages = 64, []
        for planes, count, stride in zip((64, 128, 256, 512), layers, (1, 2, 2, 2)):
            blocks = []
            for i in range(count):
                blocks.append(kind(inputs, planes, stride if i == 0 else 1, groups, width))
                inputs = planes * kind.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.channels = ([in_channels, 64] + [p * kind.expansion for p in (64, 128, 256, 512)])[:depth + 1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [x]
        x = self.relu(self.bn1(self.conv1(x)))
        features.append(x)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4)[:self.depth - 1]:
            x = stage(self.maxpool(x) if stage is self.layer1 else x)
            features.append(x)
        return features


def _conv_relu(inputs: int, outputs: int, norm: bool) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inputs, outputs, 3, padding=1, bias=not norm),
                         nn.BatchNorm2d(outputs) if norm else nn.Identity(), nn.ReLU(inplace=True))


class _DecoderBlock(nn.Module):
    def __init__(self, inputs: int, skip: int, outputs: int, norm: bool, interpolation: str):
        super().__init__()
        self.interpolation = interpolation
        self.conv1 = _conv_relu(inputs + skip, outputs, norm)
        self.attention1 = nn.Identity()
        self.conv2 = _conv_relu(outputs, outputs, norm)
        self.attention2 = nn.Identity()

    def forward(self, x: torch.Tensor, size: tuple[int, int], skip: torch.Tensor | None) -> torch.Tensor:
        x = F.interpolate(x, size=size, mode=self.interpolation)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class _UnetDecoder(nn.Module):
    def __init__(self, encoder_channels: list[int], channels: list[int], norm: bool, interpolation: str):
        super().__init__()
        deep_first = encoder_channels[1:][::-1]
        inputs = [deep_first[0]] + channels[:-1]
        skips = deep_first[1:] + [0]
        self.center = nn.Identity()
        self.blocks = nn.ModuleList(_DecoderBlock(i, s, o, norm, interpolation)
                                    for i, s, o in zip(inputs, skips, channels))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        sizes = [tuple(f.shape[2:]) for f in features][::-1]
        deep_first = features[1:][::-1]
        x = self.center(deep_first[0])
        for i, block in enumerate(self.blocks):
            skip = deep_first[i + 1] if i + 1 < len(deep_first) else None
            x = block(x, sizes[i + 1], skip)
        return x
