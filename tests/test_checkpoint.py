import time

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


def offline_hub(monkeypatch, cache):
    """The Hugging Face client pointed at ``cache`` and at a hub address that refuses connections at once."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)


def cached_imagenet_resnet18(cache):
    """A resnet18 encoder's weights (seeded random numbers) where the hub client keeps smp's 'imagenet'."""
    import torch
    from safetensors.torch import save_file
    from segmentation_models_pytorch.encoders import encoders, get_encoder

    settings = encoders["resnet18"]["pretrained_settings"]["imagenet"]
    repo = f"models--{settings['repo_id'].replace('/', '--')}"
    folder = cache / repo / "snapshots" / settings["revision"]
    folder.mkdir(parents=True)
    generator = torch.Generator().manual_seed(7)
    state = {k: torch.randn(v.shape, generator=generator) if v.is_floating_point() else v
             for k, v in get_encoder("resnet18").state_dict().items()}
    save_file({k: v.contiguous() for k, v in state.items()}, folder / "model.safetensors")
    (folder / "config.json").write_text("{}")
    return state


def test_pretrained_weights_come_from_the_local_cache_when_the_hub_is_unreachable(monkeypatch, tmp_path):
    import torch

    offline_hub(monkeypatch, tmp_path / "hub")
    state = cached_imagenet_resnet18(tmp_path / "hub")
    started = time.perf_counter()
    model = build_model("Unet", {**TINY_MODEL, "encoder_weights": "imagenet", "in_channels": 4})
    assert time.perf_counter() - started < 10
    own = model.encoder.state_dict()
    assert all(torch.equal(own[k], state[k]) for k in own if k != "conv1.weight")
    # four bands: smp repeats the RGB filters and scales them by 3/4
    assert torch.allclose(own["conv1.weight"][:, 3], state["conv1.weight"][:, 0] * 0.75)


def test_missing_pretrained_weights_are_one_clear_sentence_at_once(monkeypatch, tmp_path):
    offline_hub(monkeypatch, tmp_path / "empty")
    started = time.perf_counter()
    said = r"\(no connection to 127.0.0.1\).*encoder_weights: null"
    with pytest.raises(WeightsUnavailableError, match=said):
        build_model("Unet", {**TINY_MODEL, "encoder_weights": "imagenet"})
    assert time.perf_counter() - started < 10  # not the hub client's retries


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


def test_training_goes_on_from_scratch_with_one_warning_where_pretrained_weights_cannot_be_had(
        monkeypatch, tmp_path, sample_dir, capsys):
    from geoseg.errors import GeoSegWarning
    from geoseg.training.trainer import train

    from conftest import run_config

    offline_hub(monkeypatch, tmp_path / "empty")
    cfg = run_config(tmp_path, sample_dir / "manifest.csv", epochs=1, baseline=False, run_name="scratch",
                     model_config={**TINY_MODEL, "encoder_weights": "imagenet"})
    said = (r"pretrained 'imagenet' weights for encoder 'resnet18' are neither reachable nor in the local "
            r"cache \(no connection to 127.0.0.1\): training from scratch; .*model_config.encoder_weights: "
            r"/path/to/encoder.pth")
    with pytest.warns(GeoSegWarning, match=said):
        result = train(cfg)
    assert result.best.exists() and "starts from the pretrained" not in capsys.readouterr().out

    state = cached_imagenet_resnet18(tmp_path / "hub")
    offline_hub(monkeypatch, tmp_path / "hub")
    pretrained = {**TINY_MODEL, "encoder_weights": "imagenet"}
    trained = train(run_config(tmp_path, sample_dir / "manifest.csv", epochs=1, baseline=False,
                               run_name="pretrained", model_config=pretrained, lr=1e-12))
    assert "encoder resnet18 starts from the pretrained 'imagenet' weights" in capsys.readouterr().out
    weights = load_checkpoint(trained.best).state_dict
    # lr 1e-12: the encoder's convolutions are still the cached weights
    assert torch.allclose(weights["encoder.conv1.weight"], state["conv1.weight"], atol=1e-6)
    assert not torch.allclose(load_checkpoint(result.best).state_dict["encoder.conv1.weight"],
                              state["conv1.weight"], atol=1e-2)
