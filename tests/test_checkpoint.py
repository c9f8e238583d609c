import pytest
import torch

from geoseg.errors import CheckpointError, ConfigError, WeightsUnavailableError
from geoseg.io.classes import DEEPGLOBE
from geoseg.models.checkpoint import build_model, load_checkpoint

from conftest import TINY_MODEL


def test_checkpoint_roundtrip_rebuilds_the_same_model(tiny_checkpoint):
    ckpt = load_checkpoint(tiny_checkpoint)
    assert ckpt.classes == DEEPGLOBE and ckpt.bands == [1, 2, 3] and ckpt.chip_size == 64
    model = ckpt.build()
    x = torch.randn(1, 3, 64, 64)
    torch.manual_seed(0)
    ref = build_model("Unet", TINY_MODEL).eval()
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))


def test_not_a_checkpoint(tmp_path):
    p = tmp_path / "notes.ckpt"
    p.write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable geoseg checkpoint"):
        load_checkpoint(p)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.ckpt")


def test_truncated_checkpoint(tiny_checkpoint, tmp_path):
    data = tiny_checkpoint.read_bytes()
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(cut)


def test_other_torch_file_is_not_a_checkpoint(tmp_path):
    p = tmp_path / "weights.pt"
    torch.save({"state_dict": {}}, p)
    with pytest.raises(CheckpointError, match="not a geoseg checkpoint"):
        load_checkpoint(p)


def test_unknown_encoder_is_a_config_error():
    with pytest.raises(ConfigError):
        build_model("Unet", {**TINY_MODEL, "encoder_name": "resnet9000"})


def test_missing_pretrained_weights_are_one_clear_sentence(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(WeightsUnavailableError, match="encoder_weights: null"):
        build_model("Unet", {**TINY_MODEL, "encoder_weights": "imagenet"})


def test_fp16_is_for_gpus_only():
    import torch

    from geoseg.errors import ConfigError
    from geoseg.models.checkpoint import autocast_dtype
    with pytest.raises(ConfigError, match="precision fp16 needs a CUDA GPU; use bf16 or fp32 on the CPU"):
        autocast_dtype(torch.device("cpu"), "fp16")
    assert autocast_dtype(torch.device("cpu"), "fp32") is None
    assert autocast_dtype(torch.device("cpu"), "bf16") == torch.bfloat16


# --- encoder weights from a local file (offline, air-gapped) ---------------------------------------------

def test_encoder_weights_from_a_local_state_dict(tmp_path):
    from geoseg.errors import ConfigError
    from geoseg.models.checkpoint import build_model
    from geoseg.training.config import parse_config

    from conftest import TINY_MODEL

    torch.manual_seed(1)
    donor = build_model("Unet", TINY_MODEL)
    torch.save(donor.encoder.state_dict(), tmp_path / "encoder.pth")
    torch.save(donor.state_dict(), tmp_path / "whole_model.pt")
    for name in ("encoder.pth", "whole_model.pt"):
        torch.manual_seed(2)
        model = build_model("Unet", {**TINY_MODEL, "encoder_weights": str(tmp_path / name)})
        for key, value in donor.encoder.state_dict().items():
            assert torch.equal(model.encoder.state_dict()[key], value), (name, key)
    # a config names the file relative to itself
    cfg = parse_config({"model_config": {**TINY_MODEL, "encoder_weights": "encoder.pth"}}, tmp_path)
    assert cfg.model_config["encoder_weights"] == str(tmp_path / "encoder.pth")
    # weights of another encoder are one sentence
    four_bands = build_model("Unet", {**TINY_MODEL, "in_channels": 4})
    torch.save(four_bands.encoder.state_dict(), tmp_path / "rgbn.pth")
    with pytest.raises(ConfigError, match=r"rgbn.pth does not fit encoder 'resnet18': 1 tensors have other "
                                          r"shapes \(e.g. conv1.weight: \(64, 4, 7, 7\) instead of "
                                          r"\(64, 3, 7, 7\)\); use weights saved from the same encoder"):
        build_model("Unet", {**TINY_MODEL, "encoder_weights": str(tmp_path / "rgbn.pth")})
    other = {**TINY_MODEL, "encoder_name": "mobilenet_v2"}
    torch.save(build_model("Unet", other).encoder.state_dict(), tmp_path / "mobilenet.pth")
    with pytest.raises(ConfigError, match=r"mobilenet.pth does not fit encoder 'resnet18': \d+ of its "
                                          r"tensors are missing"):
        build_model("Unet", {**TINY_MODEL, "encoder_weights": str(tmp_path / "mobilenet.pth")})
    (tmp_path / "notes.pth").write_text("not weights")
    with pytest.raises(ConfigError, match="notes.pth is not a readable state dict"):
        build_model("Unet", {**TINY_MODEL, "encoder_weights": str(tmp_path / "notes.pth")})
    with pytest.raises(ConfigError, match="missing.pth does not exist"):
        build_model("Unet", {**TINY_MODEL, "encoder_weights": str(tmp_path / "missing.pth")})


def test_the_training_record_is_read_typed_and_checked(tmp_path):
    """Prediction reads a checkpoint's training config through one typed record: the sampling, the manifest
    resolved against the run's folder; a value of the wrong kind is one sentence, not a crash later."""
    from geoseg.errors import CheckpointError
    from geoseg.models.checkpoint import TrainingRecord

    record = TrainingRecord.from_config({"resolution": 1, "downsize_res": None, "manifest": "data/m.csv",
                                         "base_dir": str(tmp_path), "seed": 3})
    assert record == TrainingRecord(resolution=1.0, manifest=tmp_path / "data" / "m.csv", seed=3)
    assert record.describe_sampling() == "1 m pixels"
    assert TrainingRecord.from_config({"downsize_res": 512.0}).downsize_res == 512
    for bad in ({"resolution": "1m"}, {"resolution": -2}, {"downsize_res": 12.5}, {"manifest": 7}):
        with pytest.raises(CheckpointError, match="training config's .* must be"):
            TrainingRecord.from_config(bad, "m.ckpt")
