import pytest
import yaml

from geoseg.errors import ConfigError
from geoseg.training.config import load_config, parse_config

REFERENCE = """
batch_size: 6
ce_weights: [0.89, 0.40, 0.91, 0.88, 0.96, 0.92, 0.0]
downsize_res: 512
epochs: 40
loss_fn: CrossEntropyLoss
lr: 0.0003
model_architecture: Unet
model_config:
  classes: 7
  encoder_name: resnet34
  encoder_weights: imagenet
  in_channels: 3
num_workers: 2
optimizer: Adam
"""


def test_reference_experiment_config_is_accepted_as_written(tmp_path):
    p = tmp_path / "ref.yaml"
    p.write_text(REFERENCE)
    cfg = load_config(p)
    assert cfg.batch_size == 6 and cfg.epochs == 40 and cfg.lr == 0.0003 and cfg.downsize_res == 512
    assert cfg.model_config == {"classes": 7, "encoder_name": "resnet34", "encoder_weights": "imagenet",
                                "in_channels": 3}
    # a zero class weight means the class is ignored: 'unknown' (index 6)
    assert cfg.ignored_indices == [6]


def _raw(**changes):
    raw = yaml.safe_load(REFERENCE)
    raw.update(changes)
    return raw


@pytest.mark.parametrize("changes, key", [
    ({"batchsize": 4}, "batchsize"),
    ({"batch_size": "6"}, "batch_size"),
    ({"batch_size": 0}, "batch_size"),
    ({"lr": -1}, "lr"),
    ({"loss_fn": "HingeLoss"}, "loss_fn"),
    ({"optimizer": "Adagrad"}, "optimizer"),
    ({"ce_weights": [1, 2]}, "ce_weights"),
    ({"epochs": True}, "epochs"),
    ({"model_config": {"classes": 5, "encoder_name": "resnet34", "encoder_weights": None, "in_channels": 3}},
     "model_config.classes"),
    ({"model_config": {"classes": 7, "encoder_name": "resnet34", "in_channels": 3}}, "model_config"),
    ({"bands": [1, 2]}, "model_config.in_channels"),
    ({"precision": "fp8"}, "precision"),
    ({"band_jitter": 1.0}, "band_jitter"),
    ({"band_jitter": "0.1"}, "band_jitter"),
    ({"scene_jitter": 0.6}, "scene_jitter"),
    ({"scene_jitter": -0.1}, "scene_jitter"),
    ({"scene_jitter": "0.2"}, "scene_jitter"),
    ({"self_training": -1}, "self_training"),
    ({"self_training": 1.5}, "self_training"),
    ({"self_training": 11}, "self_training"),
    ({"pseudo_label_confidence": 0.4}, "pseudo_label_confidence"),
    ({"pseudo_label_confidence": 1.1}, "pseudo_label_confidence"),
    ({"pseudo_label_share": 1.5}, "pseudo_label_share"),
])
def test_bad_values_name_the_key(changes, key):
    with pytest.raises(ConfigError) as exc:
        parse_config(_raw(**changes))
    assert f"'{key}'" in str(exc.value)


def test_custom_classes_with_own_codes():
    raw = _raw(ce_weights=None, classes=[
        {"code": 10, "name": "tree", "color": [0, 100, 0]},
        {"code": 20, "name": "shrub", "color": [255, 187, 34]},
        {"code": 80, "name": "water", "color": [0, 100, 200]},
    ], model_config={"classes": 3, "encoder_name": "resnet18", "encoder_weights": None, "in_channels": 3})
    cfg = parse_config(raw)
    assert cfg.classes.codes == [10, 20, 80]
    assert cfg.classes.code_to_index_lut()[[10, 20, 80, 30]].tolist() == [0, 1, 2, 255]


def test_class_colours_as_gis_tools_write_them():
    raw = _raw(ce_weights=None, classes=[
        {"code": 1, "name": "crops", "color": "#e31a1c"},
        {"code": 2, "name": "water", "color": "1f78B4"},
        {"code": 3, "name": "forest", "color": [51, 160, 44]},
    ], model_config={"classes": 3, "encoder_name": "resnet18", "encoder_weights": None, "in_channels": 3})
    assert parse_config(raw).classes.colors == [(227, 26, 28), (31, 120, 180), (51, 160, 44)]
    raw["classes"][0]["color"] = "#e31a1"
    with pytest.raises(ConfigError, match=r"classes\[0\].color must be three integers 0..255 or '#rrggbb', "
                                          r"got '#e31a1'"):
        parse_config(raw)


def test_label_field_is_a_name():
    assert parse_config(_raw(label_field="landcover")).label_field == "landcover"
    with pytest.raises(ConfigError, match="config key 'label_field'"):
        parse_config(_raw(label_field=""))


def test_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("batch_size: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_bundled_pipelines_are_valid():
    from pathlib import Path
    root = Path(__file__).parent.parent / "pipelines"
    configs = {p.relative_to(root).as_posix(): load_config(p) for p in sorted(root.rglob("*.yaml"))}
    assert {"sample.yaml", "deepglobe/reference.yaml", "deepglobe/improved.yaml"} <= set(configs)
    sample = configs["sample.yaml"]
    assert sample.manifest_path == (root.parent / "sample_data" / "manifest.csv").resolve()
    assert sample.manifest_path.is_file() and sample.model_config["encoder_weights"] == "imagenet"
    reference = configs["deepglobe/reference.yaml"]
    assert (reference.batch_size, reference.ce_weights, reference.downsize_res, reference.epochs) == (
        6, [0.89, 0.40, 0.91, 0.88, 0.96, 0.92, 0.0], 512, 40)
    assert (reference.loss_fn, reference.lr, reference.optimizer, reference.num_workers) == (
        "CrossEntropyLoss", 0.0003, "Adam", 2)
