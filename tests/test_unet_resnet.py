"""The plain-torch U-Net on ResNet encoders: the same parameters and the same numbers as
segmentation-models-pytorch's ``Unet``, and a checkpoint predicts with it without importing smp, timm or
torchvision."""

from __future__ import annotations

import subprocess
import sys

import pytest
import segmentation_models_pytorch as smp
import torch

from geoseg.models import unet_resnet
from geoseg.models.checkpoint import build_model, load_checkpoint

CONFIGS = [
    dict(encoder_name="resnet18", classes=7, in_channels=3, decoder_channels=[128, 64, 32, 16, 16]),
    dict(encoder_name="resnet34", classes=5, in_channels=4),
    dict(encoder_name="resnet50", classes=3, in_channels=1, encoder_depth=4, decoder_channels=[64, 32, 16, 8],
         decoder_use_norm=False),
    dict(encoder_name="resnext50_32x4d", classes=2, encoder_depth=3, decoder_channels=[32, 16, 8],
         decoder_interpolation="bilinear"),
]


def smp_reference(config: dict) -> torch.nn.Module:
    """smp's model with random weights and batch-norm statistics away from their initial values."""
    torch.manual_seed(1)
    model = smp.create_model("Unet", encoder_weights=None, **config)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_(1.0, 0.2)
            m.bias.data.normal_(0.0, 0.1)
    return model.eval()


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c["encoder_name"])
def test_same_parameters_and_the_same_numbers_as_smp(config):
    assert unet_resnet.supports("Unet", config)
    reference = smp_reference(config)
    ours = unet_resnet.build(config)
    theirs = reference.state_dict()
    assert [(k, tuple(v.shape)) for k, v in ours.state_dict().items()] == \
        [(k, tuple(v.shape)) for k, v in theirs.items()]
    ours.load_state_dict(theirs)
    ours.eval()
    bands = config.get("in_channels", 3)
    for shape in ((2, bands, 96, 160), (1, bands, 70, 90)):  # also sizes the encoder's stride does not divide
        x = torch.randn(*shape)
        with torch.inference_mode():
            assert torch.equal(ours(x), reference(x))


def test_bf16_channels_last_as_torch_predicts_on_a_cpu():
    config = CONFIGS[0]
    reference = smp_reference(config).to(memory_format=torch.channels_last)
    ours = unet_resnet.build(config)
    ours.load_state_dict(reference.state_dict())
    ours = ours.eval().to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 128, 128).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(ours(x), reference(x))


@pytest.mark.parametrize("encoder", sorted(unet_resnet.ENCODERS))
def test_every_encoder_has_smps_parameter_names_and_shapes(encoder):
    config = {"encoder_name": encoder, "classes": 4, "in_channels": 6}
    with torch.device("meta"):
        ours = unet_resnet.build(config).state_dict()
        theirs = smp.create_model("Unet", encoder_weights=None, **config).state_dict()
    assert [(k, tuple(v.shape)) for k, v in ours.items()] == [(k, tuple(v.shape)) for k, v in theirs.items()]


@pytest.mark.parametrize("architecture, config", [
    ("FPN", {"encoder_name": "resnet18"}),
    ("Unet", {"encoder_name": "efficientnet-b0"}),
    ("Unet", {"encoder_name": "resnet18", "decoder_attention_type": "scse"}),
    ("Unet", {"encoder_name": "resnet18", "aux_params": {"classes": 2}}),
    ("Unet", {"encoder_name": "resnet18", "activation": "softmax"}),
    ("Unet", {"encoder_name": "resnet18", "decoder_use_norm": "layernorm"}),
    ("Unet", {"encoder_name": "resnet18", "encoder_depth": 4}),  # five decoder channels for four stages
    ("Unet", {"encoder_name": "resnet18", "encoder_depth": 6, "decoder_channels": [8] * 6}),
    ("Unet", {"encoder_name": "resnet18", "in_channels": True}),
    ("Unet", {"encoder_name": "resnet18", "output_stride": 16}),
])
def test_anything_else_is_left_to_smp(architecture, config):
    assert not unet_resnet.supports(architecture, config)


def test_a_checkpoint_is_built_with_it_and_predicts_as_smps_model(tiny_checkpoint):
    ckpt = load_checkpoint(tiny_checkpoint)
    reference = build_model(ckpt.architecture, ckpt.model_config, pretrained=False)
    reference.load_state_dict(ckpt.state_dict)
    model = ckpt.build()
    assert type(model).__module__ == "geoseg.models.unet_resnet"
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(model(x), reference.eval()(x))


def test_predicting_with_torch_imports_neither_smp_nor_timm_nor_torchvision(tiny_checkpoint):
    code = ("import sys, numpy as np\n"
            "from geoseg.models.checkpoint import load_checkpoint\n"
            "from geoseg.models.engines import _bf16_forward\n"
            f"ckpt = load_checkpoint({str(tiny_checkpoint)!r})\n"
            "p = _bf16_forward(ckpt)(np.zeros((1, 3, 64, 64), np.float32))\n"
            "assert p.shape == (1, 7, 64, 64)\n"
            "names = ('segmentation_models_pytorch', 'timm', 'torchvision')\n"
            "print(sorted(m for m in names if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"
