"""The per-pixel yardstick as a model: a gradient-boosted classifier's trees (fitted by
:mod:`geoseg.training.baseline`) on band values and local statistics.

Features per band, from the normalised chip: the value, its 7 px and 21 px box
means and its 7 px standard deviation (12 features for RGB). ``geoseg baseline``
saves it as a model ``geoseg predict`` runs (a first map in minutes): behind the
model interface prediction uses, it turns a batch of chips into class
log-probabilities, so blending, block invariance and outputs are the network's.

The fitted classifier is stored in the checkpoint as plain arrays (the nodes of
its trees, field by field: :class:`TreeEnsemble`), never as a pickle: a model
file is data, and these arrays are checked (shapes, dtypes, every child index
and feature index in range) before a tree is rebuilt from them. Baselines saved
by earlier versions as a pickle are refused with a sentence that says how to
fit them again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from geoseg.errors import CheckpointError
from geoseg.models.fields import BASELINE as ARCHITECTURE  # noqa: F401  (the name its checkpoints carry)


def pixel_features(x: torch.Tensor) -> torch.Tensor:
    """[n, 4·bands, h, w] features of normalised chips [n, bands, h, w]: value, 7 and 21 px box means, 7 px
    standard deviation (reflected at the chip's edges)."""
    def box(t: torch.Tensor, k: int) -> torch.Tensor:
        return F.avg_pool2d(F.pad(t, [k // 2] * 4, mode="reflect"), k, stride=1)

    mean7, mean21 = box(x, 7), box(x, 21)
    std7 = (box(x * x, 7) - mean7 * mean7).clamp_min(0).sqrt()
    return torch.cat([x, mean7, mean21, std7], dim=1)


#: The fields of a tree node kept in a checkpoint, with their dtypes (scikit-learn's own names).
NODE_FIELDS = {"value": torch.float64, "feature_idx": torch.int64, "num_threshold": torch.float64,
               "missing_go_to_left": torch.uint8, "left": torch.int64, "right": torch.int64,
               "is_leaf": torch.uint8}
#: The tensors of a baseline checkpoint's ``state_dict`` besides the node fields.
ENSEMBLE_TENSORS = {"classes": torch.int64, "baseline": torch.float64, "tree_sizes": torch.int64}
#: Bounds that keep a hostile file from asking for unbounded memory or time.
MAX_NODES = 20_000_000
MAX_TREES = 200_000


class PickledBaselineError(CheckpointError):
    """A baseline saved by geoseg 0.1 before this check: its classifier is a Python pickle."""


@dataclass(frozen=True)
class TreeEnsemble:
    """A fitted :class:`~sklearn.ensemble.HistGradientBoostingClassifier` as plain arrays.

    ``classes`` are the model indices the classifier knows; ``baseline`` its raw score before any tree (one
    per tree of an iteration); ``tree_sizes`` [iterations, trees per iteration] the node count of each tree;
    ``nodes`` the :data:`NODE_FIELDS` of all trees, one after another (child indices local to their tree).
    Prediction rebuilds scikit-learn's compiled tree predictors from these arrays, so the numbers are the
    classifier's own.
    """

    classes: np.ndarray
    baseline: np.ndarray
    tree_sizes: np.ndarray
    nodes: Mapping[str, np.ndarray]
    n_features: int

    @classmethod
    def from_classifier(cls, classifier: Any, n_features: int) -> "TreeEnsemble":
        trees = [tree for iteration in classifier._predictors for tree in iteration]
        sizes = np.array([[len(t.nodes) for t in it] for it in classifier._predictors], np.int64)
        nodes = {name: np.concatenate([t.nodes[name] for t in trees]) if trees else np.zeros(0)
                 for name in NODE_FIELDS}
        return cls(np.asarray(classifier.classes_, np.int64),
                   np.asarray(classifier._baseline_prediction, np.float64).ravel(),
                   sizes.reshape(len(classifier._predictors), -1), nodes, n_features)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """The ``state_dict`` of a baseline checkpoint."""
        arrays = {"classes": self.classes, "baseline": self.baseline, "tree_sizes": self.tree_sizes,
                  **{f"nodes.{name}": self.nodes[name] for name in NODE_FIELDS}}
        dtypes = {**ENSEMBLE_TENSORS, **{f"nodes.{name}": d for name, d in NODE_FIELDS.items()}}
        return {key: torch.from_numpy(np.ascontiguousarray(a)).to(dtypes[key]) for key, a in arrays.items()}

    @classmethod
    def from_tensors(cls, state: Mapping[str, Any], n_features: int, n_classes: int) -> "TreeEnsemble":
        """The ensemble a checkpoint's ``state_dict`` holds, checked field by field; a ValueError says what is
        wrong (a :class:`PickledBaselineError` for an old pickled one)."""
        if "classifier" in state:
            raise PickledBaselineError("is a baseline saved by an earlier geoseg as a Python pickle, which "
                                       "geoseg no longer loads because a pickle can run code; fit it again "
                                       "with geoseg baseline --config <your config>")
        arrays = {}
        expected = {**ENSEMBLE_TENSORS, **{f"nodes.{name}": d for name, d in NODE_FIELDS.items()}}
        if set(state) != set(expected):
            raise ValueError(f"state_dict must hold exactly the tensors {', '.join(sorted(expected))}")
        for key, dtype in expected.items():
            t = state[key]
            if not isinstance(t, torch.Tensor) or t.dtype != dtype or t.layout != torch.strided:
                raise ValueError(f"state_dict.{key} must be a {dtype} tensor")
            arrays[key] = t.detach().cpu().contiguous().numpy()
        ensemble = cls(arrays["classes"], arrays["baseline"], arrays["tree_sizes"],
                       {name: arrays[f"nodes.{name}"] for name in NODE_FIELDS}, n_features)
        ensemble._check(n_classes)
        return ensemble

    def _check(self, n_classes: int) -> None:
        classes, baseline, sizes = self.classes, self.baseline, self.tree_sizes
        if classes.ndim != 1 or not 1 <= len(classes) <= n_classes or np.any(np.diff(classes) <= 0) \
                or classes.min() < 0 or classes.max() >= n_classes:
            raise ValueError(f"state_dict.classes must be increasing class indices below {n_classes}")
        per_iteration = 1 if len(classes) <= 2 else len(classes)
        if baseline.shape != (per_iteration,) or not np.isfinite(baseline).all():
            raise ValueError(f"state_dict.baseline must be {per_iteration} finite numbers")
        if sizes.ndim != 2 or sizes.shape[1] != per_iteration or sizes.size > MAX_TREES or \
                (sizes.size and sizes.min() < 1):
            raise ValueError(f"state_dict.tree_sizes must be [iterations, {per_iteration}] positive node "
                             "counts")
        total = int(sizes.sum())
        if total > MAX_NODES or any(a.shape != (total,) for a in self.nodes.values()):
            raise ValueError(f"each state_dict.nodes tensor must hold the {total} nodes tree_sizes counts")
        self._check_nodes(sizes.ravel())

    def _check_nodes(self, sizes: np.ndarray) -> None:
        """Every tree is well formed: children after their parent and inside their tree (so a walk from the
        root ends at a leaf), features in range, no NaN threshold, finite leaf values."""
        nodes = self.nodes
        size = np.repeat(sizes, sizes)
        local = np.arange(len(size)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        leaf, missing = nodes["is_leaf"], nodes["missing_go_to_left"]
        if np.any(leaf > 1) or np.any(missing > 1):
            raise ValueError("state_dict.nodes.is_leaf and missing_go_to_left must be 0 or 1")
        inner = leaf == 0
        for side in ("left", "right"):
            child = nodes[side][inner]
            if np.any(child <= local[inner]) or np.any(child >= size[inner]):
                raise ValueError(f"state_dict.nodes.{side} must point to a later node of the same tree")
        feature = nodes["feature_idx"][inner]
        if np.any(feature < 0) or np.any(feature >= self.n_features):
            raise ValueError(f"state_dict.nodes.feature_idx must be below {self.n_features} (4 per band)")
        if np.isnan(nodes["num_threshold"][inner]).any() or not np.isfinite(nodes["value"][~inner]).all():
            raise ValueError("state_dict.nodes must hold no NaN threshold and finite leaf values")

    def _predictors(self) -> list:
        from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE
        from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor

        no_categories = np.zeros((0, 8), np.uint32)
        predictors, start = [], 0
        for size in self.tree_sizes.ravel():
            nodes = np.zeros(int(size), PREDICTOR_RECORD_DTYPE)
            for name in NODE_FIELDS:
                nodes[name] = self.nodes[name][start:start + size]
            predictors.append(TreePredictor(nodes, no_categories, no_categories))
            start += size
        return predictors

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities [n, len(classes)] of ``features`` [n, n_features] (the classifier's own)."""
        if len(self.classes) == 1:  # labels of one class
            return np.ones((len(features), 1))
        predictors = self.__dict__.get("_cached")
        if predictors is None:
            predictors = self._predictors()
            object.__setattr__(self, "_cached", predictors)
        features = np.ascontiguousarray(features, np.float64)
        per_iteration = len(self.baseline)
        raw = np.tile(self.baseline, (len(features), 1))
        f_idx_map = np.zeros(self.n_features, np.uint32)
        no_categories = np.zeros((0, 8), np.uint32)
        threads = torch.get_num_threads()
        for i, tree in enumerate(predictors):
            raw[:, i % per_iteration] += tree.predict(features, no_categories, f_idx_map, threads)
        if per_iteration == 1:
            p = 1 / (1 + np.exp(-raw[:, 0]))
            return np.stack([1 - p, p], axis=1)
        e = np.exp(raw - raw.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


class PixelBaselineModel(torch.nn.Module):
    """The fitted classifier as a model of chips → class log-probabilities [n, K, h, w]."""

    def __init__(self, ensemble: TreeEnsemble, classes: int):
        super().__init__()
        self.ensemble, self.k = ensemble, classes
        self.register_buffer("_device", torch.zeros(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        features = pixel_features(x.float()).permute(0, 2, 3, 1).reshape(n * h * w, -1).numpy()
        proba = np.full((features.shape[0], self.k), 1e-9, np.float32)
        proba[:, self.ensemble.classes] = np.maximum(self.ensemble.predict_proba(features), 1e-9)
        logp = torch.from_numpy(np.log(proba)).reshape(n, h, w, self.k).permute(0, 3, 1, 2)
        return logp.contiguous()
