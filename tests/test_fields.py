"""A model file is data: no code runs from a checkpoint or an exported model, and every field is checked.

The canary tests put a pickled payload (``os.system("touch CANARY")``) into every slot geoseg reads, as the
bytes of a tensor and as a real pickled object, and run each command that opens a model: the canary file must
never appear, and the command either works or says one sentence (exit 2). The fuzz tests mutate the fields of
a real checkpoint and of an exported model's metadata (drop, replace, retype, truncate, oversize) and accept
only a model that loads and runs or a geoseg error of one line.
"""

import copy
import json
import math
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geoseg.cli import main
from geoseg.errors import CheckpointError, GeoSegError
from geoseg.models.checkpoint import load_checkpoint
from geoseg.models.export import export_onnx
from geoseg.training.config import parse_config
from geoseg.training.trainer import train, train_baseline

from conftest import TINY_MODEL, write_raster

CLASSES = [{"code": 1, "name": "water", "color": "#0000ff"},
           {"code": 2, "name": "forest", "color": "#00ff00"},
           {"code": 3, "name": "urban", "color": "#ff0000"}]


class Payload:
    """What a hostile model file carries: unpickling it runs a shell command that creates ``canary``."""

    def __init__(self, canary: Path):
        self.canary = canary

    def __reduce__(self):
        return os.system, (f"touch {self.canary}",)


def payload_tensor(canary: Path) -> torch.Tensor:
    return torch.frombuffer(bytearray(pickle.dumps(Payload(canary))), dtype=torch.uint8)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A tiny labelled scene, a network's ``last.ckpt`` (with its training state) and a baseline."""
    root = tmp_path_factory.mktemp("models")
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:96, 0:96]
    codes = np.where(np.sin(x / 9.0) > 0.3, 1, np.where(x + y < 90, 2, 3)).astype(np.uint8)
    colours = np.array([[0, 0, 0], [30, 60, 150], [40, 130, 50], [170, 160, 150]])
    image = np.clip(colours[codes].transpose(2, 0, 1) + rng.normal(0, 6, (3, 96, 96)), 1, 255)
    write_raster(root / "s.tif", image.astype(np.uint8))
    write_raster(root / "s_labels.tif", codes, nodata=255)
    (root / "m.csv").write_text("image,label,split\ns.tif,s_labels.tif,train\ns.tif,s_labels.tif,val\n"
                                "s.tif,s_labels.tif,test\n")
    cfg = parse_config({"manifest": "m.csv", "classes": CLASSES, "model_config": {**TINY_MODEL, "classes": 3},
                        "chip_size": 64, "chips_per_epoch": 4, "batch_size": 2, "epochs": 1,
                        "num_workers": 0, "output_dir": "runs", "run_name": "r", "logger": "csv"}, root)
    run = train(cfg)
    shutil.copy(run.last, root / "last.ckpt")
    train_baseline(cfg, root / "baseline.ckpt")
    return root


def raw(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def slots(canary: Path) -> dict:
    """Every slot of a checkpoint geoseg reads, each given the payload as a tensor of pickle bytes."""
    def put(*keys):
        def mutate(d):
            target = d
            for key in keys[:-1]:
                target = target[key]
            target[keys[-1]] = payload_tensor(canary)
        return mutate

    def first_weight(d):
        d["state_dict"][next(iter(d["state_dict"]))] = payload_tensor(canary)

    return {
        "baseline classifier (as geoseg 0.1 stored it)": ("baseline", lambda d: d.update(
            state_dict={"classifier": payload_tensor(canary)})),
        "a baseline tree array": ("baseline", put("state_dict", "nodes.value")),
        "a network weight": ("last", first_weight),
        "architecture": ("last", put("architecture")),
        "model_config": ("last", put("model_config", "encoder_name")),
        "classes": ("last", put("classes", 0, "name")),
        "bands": ("last", put("bands")),
        "normalization": ("last", put("normalization", "mean")),
        "chip_size": ("last", put("chip_size")),
        "resolution": ("last", put("resolution")),
        "train_config": ("last", put("train_config", "manifest")),
        "metrics": ("last", put("metrics", "val_miou")),
        "data": ("last", put("data", "synthetic")),
        "epoch": ("last", put("epoch")),
        "training_state.optimizer": ("last", put("training_state", "optimizer")),
        "training_state.rng": ("last", put("training_state", "rng", "python")),
        "training_state.history": ("last", put("training_state", "history")),
    }


def commands(project: Path, model: Path, out: Path) -> dict[str, list]:
    """Each command that opens a model file, as a user types it."""
    return {
        "predict": ["predict", project / "s.tif", "-o", out / "lc.tif", "--model", model, "--quiet"],
        "evaluate": ["evaluate", "--model", model, "--data", project / "m.csv", "--out", out / "ev",
                     "--bootstrap", "0", "--worst", "0", "--quiet"],
        "export": ["export", model, "-o", out / "m.onnx"],
        "train --resume": ["train", "--resume", model, "--quiet"],
    }


def run_cli(capsys, args) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in args])
    return exit_.value.code, capsys.readouterr().err


def one_sentence(code: int, err: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    assert err.startswith("geoseg: error: ") and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("slot", list(slots(Path("x"))))
def test_a_pickled_payload_in_any_slot_never_runs(tmp_path, capsys, project, slot):
    """Fails on geoseg 0.1: its baseline was unpickled, which ran the payload."""
    canary = tmp_path / "CANARY"
    source, mutate = slots(canary)[slot]
    d = raw(project / f"{source}.ckpt")
    mutate(d)
    evil = tmp_path / "evil.ckpt"
    torch.save(d, evil)
    for name, args in commands(project, evil, tmp_path).items():
        code, err = run_cli(capsys, args)
        assert not canary.exists(), f"{name} ran the payload in {slot}"
        if slot.startswith("training_state") and name != "train --resume":
            assert code == 0, err  # only --resume reads the training state: the model itself is fine
        else:
            one_sentence(code, err)


def test_a_real_pickled_object_in_a_checkpoint_is_refused(tmp_path, capsys, project):
    """A payload that is itself a pickled object (not bytes in a tensor): torch's weights-only loader refuses
    it before it can run, and geoseg says so in one sentence."""
    canary = tmp_path / "CANARY"
    d = raw(project / "last.ckpt")
    d["metrics"] = Payload(canary)
    evil = tmp_path / "evil.ckpt"
    torch.save(d, evil)
    for name, args in commands(project, evil, tmp_path).items():
        code, err = run_cli(capsys, args)
        assert not canary.exists(), name
        one_sentence(code, err)
        assert "not a readable geoseg checkpoint" in err


def test_the_old_pickled_baseline_is_refused_with_how_to_rebuild_it(tmp_path, project):
    canary = tmp_path / "CANARY"
    d = raw(project / "baseline.ckpt")
    d["state_dict"] = {"classifier": payload_tensor(canary)}
    torch.save(d, tmp_path / "old.ckpt")
    with pytest.raises(CheckpointError, match="pickle can run code; fit it again with geoseg baseline"):
        load_checkpoint(tmp_path / "old.ckpt")
    assert not canary.exists()


def test_the_qgis_providers_process_never_runs_a_payload(tmp_path, project):
    """The QGIS provider runs the geoseg executable with the analyst's model (runner.run_geoseg): the same
    process, started the same way, with the hostile baseline."""
    canary = tmp_path / "CANARY"
    d = raw(project / "baseline.ckpt")
    d["state_dict"] = {"classifier": payload_tensor(canary)}
    torch.save(d, tmp_path / "evil.ckpt")
    geoseg = Path(sys.executable).with_name("geoseg")
    done = subprocess.run([str(geoseg), "predict", str(project / "s.tif"), "--model",
                           str(tmp_path / "evil.ckpt"), "-o", str(tmp_path / "a.tif"), "--overwrite"],
                          capture_output=True, text=True,
                          env=dict(os.environ, GEOSEG_PROGRESS="lines"), timeout=300)
    assert not canary.exists()
    assert done.returncode == 2 and done.stderr.count("geoseg: error:") == 1, done.stderr


def test_a_baseline_saved_as_arrays_predicts_like_before(tmp_path, capsys, project):
    code, err = run_cli(capsys, ["predict", project / "s.tif", "-o", tmp_path / "b.tif", "--model",
                                 project / "baseline.ckpt", "--quiet"])
    assert code == 0, err


# ---------------------------------------------------------------------------------------------- fuzzing

ODD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.sampled_from([0, -1, 1, 255, 10**12]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20), st.just("x" * 20_000),
    st.lists(st.integers(-5, 300), max_size=8), st.just(list(range(5000))), st.just({}),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.builds(lambda n: torch.zeros(n), st.integers(0, 4)),
)

#: Where a mutation may land: the fields and nested fields geoseg reads.
FIELD_PATHS = [
    ("architecture",), ("model_config",), ("model_config", "classes"), ("model_config", "in_channels"),
    ("model_config", "encoder_name"), ("model_config", "encoder_depth"), ("model_config", "decoder_channels"),
    ("classes",), ("classes", 0), ("classes", 0, "code"), ("classes", 1, "name"), ("classes", 2, "color"),
    ("classes", 0, "ignore"), ("bands",), ("bands", 0), ("normalization",), ("normalization", "mean"),
    ("normalization", "std"), ("normalization", "low"), ("chip_size",), ("resolution",), ("train_config",),
    ("train_config", "resolution"), ("train_config", "downsize_res"), ("train_config", "manifest"),
    ("train_config", "split_fractions"), ("train_config", "seed"), ("epoch",), ("metrics",), ("data",),
    ("data", "synthetic"), ("state_dict",), ("format_version",),
]

mutations = st.tuples(st.sampled_from(FIELD_PATHS), st.sampled_from(["drop", "replace", "truncate", "grow"]),
                      ODD_VALUES)

FUZZ = settings(max_examples=60, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def mutate(d: dict, path: tuple, action: str, value) -> dict:
    d = copy.copy(d) if not isinstance(d, dict) else {**d}
    parent = d
    for key in path[:-1]:
        child = parent[key] if _has(parent, key) else None
        if child is None:
            return d
        child = list(child) if isinstance(child, list) else dict(child) if isinstance(child, dict) else child
        parent[key] = child
        parent = child
    key = path[-1]
    if not _has(parent, key) and action != "replace":
        return d
    current = parent[key] if _has(parent, key) else None
    if action == "drop" and isinstance(parent, dict):
        del parent[key]
    elif action == "truncate" and isinstance(current, (list, dict, str)):
        parent[key] = type(current)(list(current.items())[:len(current) // 2]) if isinstance(current, dict) \
            else current[:len(current) // 2]
    elif action == "grow" and isinstance(current, list):
        parent[key] = current * 3
    elif action == "grow" and isinstance(current, (int, float)) and not isinstance(current, bool):
        parent[key] = current * 10**6 + 1
    elif isinstance(parent, dict) or _has(parent, key):
        parent[key] = value
    return d


def _has(parent, key) -> bool:
    if isinstance(parent, dict):
        return key in parent
    return isinstance(parent, list) and isinstance(key, int) and key < len(parent)


def loads_and_runs_or_one_sentence(path: Path) -> None:
    """The model loads, builds and turns a chip into class probabilities, or a geoseg error of one line."""
    try:
        ckpt = load_checkpoint(path)
        model = ckpt.build()
        x = np.zeros((1, len(ckpt.bands), 64, 64), np.float32)
        if hasattr(model, "probabilities"):
            out = model.probabilities(x)
        else:
            with torch.inference_mode():
                out = model(torch.from_numpy(x)).numpy()
        assert out.shape == (1, len(ckpt.classes), 64, 64)
    except GeoSegError as exc:
        message = str(exc)
        assert message and "\n" not in message and len(message) < 600, message
        assert str(path) in message or "checkpoint" in message, message


@pytest.mark.parametrize("source", ["last", "baseline"])  # a network with its training state, a baseline
@FUZZ
@given(change=mutations)
def test_mutated_checkpoints_load_or_are_one_sentence(tmp_path, project, source, change):
    path = tmp_path / "m.ckpt"
    torch.save(mutate(raw(project / f"{source}.ckpt"), *change), path)
    loads_and_runs_or_one_sentence(path)


@pytest.fixture(scope="module")
def exported(project, tmp_path_factory) -> Path:
    return export_onnx(project / "last.ckpt", tmp_path_factory.mktemp("onnx") / "m.onnx")


ONNX_PATHS = [tuple("mean" if k == "normalization" else k for k in p if k != "normalization") or ("mean",)
              for p in FIELD_PATHS if p[0] not in ("state_dict", "format_version")] + [("clip",), ("std",)]


def with_metadata(model: onnx.ModelProto, text: str, path: Path) -> Path:
    model = copy.deepcopy(model)
    for entry in model.metadata_props:
        if entry.key == "geoseg":
            entry.value = text
    onnx.save(model, str(path))
    return path


@FUZZ
@given(change=st.tuples(st.sampled_from(ONNX_PATHS), st.sampled_from(["drop", "replace", "truncate", "grow"]),
                        ODD_VALUES.filter(lambda v: not isinstance(v, torch.Tensor))))
def test_mutated_onnx_metadata_loads_or_is_one_sentence(tmp_path, exported, change):
    graph = onnx.load(str(exported))
    fields = json.loads(next(e.value for e in graph.metadata_props if e.key == "geoseg"))
    fields = mutate(fields, *change)
    text = json.dumps(fields, default=str, allow_nan=True)
    loads_and_runs_or_one_sentence(with_metadata(graph, text, tmp_path / f"m{abs(hash(text)) % 10**9}.onnx"))


@pytest.mark.parametrize("text", ["", "{", "null", "[]", "1e999", "[" * 100_000 + "]" * 100_000,
                                  '{"architecture": "Unet"}', "\"x\"" * 3])
def test_onnx_metadata_that_is_not_geosegs_fields_is_one_sentence(tmp_path, exported, text):
    path = with_metadata(onnx.load(str(exported)), text, tmp_path / "m.onnx")
    with pytest.raises(CheckpointError, match="is not a usable geoseg model"):
        load_checkpoint(path)


def test_an_onnx_graph_that_does_not_match_its_metadata_is_one_sentence(tmp_path, exported):
    graph = onnx.load(str(exported))
    fields = json.loads(next(e.value for e in graph.metadata_props if e.key == "geoseg"))
    fields.update(bands=[1, 2], mean=fields["mean"][:2], std=fields["std"][:2])
    fields["model_config"]["in_channels"] = 2
    path = with_metadata(graph, json.dumps(fields), tmp_path / "m.onnx")
    with pytest.raises(CheckpointError, match="its graph must take 'input'"):
        load_checkpoint(path).build()


@pytest.mark.parametrize("field, value, says", [
    ("classes", [{"code": 255, "name": "a", "color": [0, 0, 0]},
                 {"code": 1, "name": "b", "color": [1, 1, 1]}],
     "classes\\[0\\].code must be an integer from 0 to 254"),
    ("bands", [1, 0, 3], "bands\\[1\\] must be a band number from 1"),
    ("chip_size", 10**6, "chip_size must be an integer from 8 to 4096"),
    ("resolution", math.inf, "resolution must be null or a ground size in metres"),
    ("normalization", {"mean": [1.0, 2.0], "std": [1.0, 1.0, 1.0]}, "normalization.mean must be a list of 3"),
    ("normalization", {"mean": [1.0] * 3, "std": [1.0, 0.0, 1.0]}, "normalization.std must be positive"),
    ("model_config", {**TINY_MODEL, "classes": 3, "decoder_channels": [10**6] * 3}, "do not fit its Unet"),
])
def test_each_field_is_named_when_it_is_wrong(tmp_path, project, field, value, says):
    d = raw(project / "last.ckpt")
    d[field] = value
    torch.save(d, tmp_path / "m.ckpt")
    with pytest.raises(CheckpointError, match=says):
        load_checkpoint(tmp_path / "m.ckpt").build()
