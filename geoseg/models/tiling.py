"""The side of the tiles a model predicts when ``--tile`` is not given, and the overlap between them.

A model whose class at a pixel depends only on the pixels around it — a U-Net, U-Net++, FPN or LinkNet on a
convolutional encoder without global pooling, and the per-pixel baseline — predicts on tiles larger than the
chips it was trained on; the overlap its tiles need is set by that neighbourhood (the training chip's eighth),
not by the tile. Larger tiles with that overlap recompute less of the scene twice, and fewer, larger forward
passes feed the engine better. So, for such a model, prediction takes the tile that computes the fewest
pixels for the scene at hand among the multiples of 32 from the training chip to :func:`largest_tile`
(4 chips, at most 1024 px): one tile where the scene fits in one, and no tile that mostly pads past the
scene's edge. A model that pools over its whole input (DeepLabV3's image pooling, squeeze-and-excitation or
attention in the encoder, transformers) sees a different image in a larger tile, so it keeps its chip, as
does an exported ONNX model (its input may be fixed) and a prediction restricted to an area of interest
(small chips follow its outline).
"""

from __future__ import annotations

from geoseg.io.grid import ChipGrid
from geoseg.models.checkpoint import Checkpoint
from geoseg.models.fields import BASELINE, BLEND

#: A tile's side is a multiple of this (a U-Net's output stride).
STEP = 32
#: The largest default tile, in training chips per side and in pixels.
CHIPS_PER_SIDE = 4
LARGEST = 1024

#: Architectures whose output at a pixel depends on a bounded neighbourhood (given a local encoder).
_LOCAL_ARCHITECTURES = {"unet", "unetplusplus", "fpn", "linknet"}
#: Encoder families made of convolutions alone: no squeeze-and-excitation, attention or global pooling.
_LOCAL_ENCODERS = ("resnet", "resnext", "vgg", "densenet", "mobilenet_v2", "timm-regnetx", "tu-resnet",
                   "tu-resnext", "tu-regnetx", "tu-convnext", "tu-vgg", "tu-densenet")
_SE_ENCODER_PARTS = ("se_", "seresnext", "resnest", "regnety", "skresnet", "ecaresnet", "gcresnet")


def overlap_for(ckpt: Checkpoint, asked_tile: int | None, asked: int | None) -> int:
    """Pixels shared by neighbouring tiles: ``asked`` (``--overlap``), else the eighth of the tile asked for
    (``--tile``, as it always had), else the training chip's eighth (the default tile)."""
    if asked is not None:
        return asked
    return (asked_tile or ckpt.chip_size) // 8


def is_local(ckpt: Checkpoint) -> bool:
    """Whether ``ckpt``'s class at a pixel depends only on the pixels around it, so that a larger tile
    predicts what its chips would, away from the tile's borders."""
    if ckpt.architecture == BASELINE:
        return True
    architecture, config = ckpt.architecture, ckpt.model_config
    if architecture == BLEND:
        architecture, config = config["network_architecture"], config["network_config"]
    encoder = str(config.get("encoder_name", "resnet34")).lower()  # smp's default encoder
    return (architecture.lower() in _LOCAL_ARCHITECTURES and encoder.startswith(_LOCAL_ENCODERS)
            and not any(part in encoder for part in _SE_ENCODER_PARTS))


def largest_tile(chip: int) -> int:
    """The largest default tile for a model trained on ``chip`` px chips (the chip itself where that is
    larger)."""
    return max(chip, min(CHIPS_PER_SIDE * chip, LARGEST) // STEP * STEP)


def default_tile(ckpt: Checkpoint, width: int, height: int, overlap: int | None = None) -> int:
    """The tile ``ckpt`` predicts a ``width`` × ``height`` px scene on without ``--tile``: its training chip,
    or, for a local model, the tile that computes the fewest pixels with the chip's overlap (the smaller
    tile where two compute as many)."""
    chip = ckpt.chip_size
    if not is_local(ckpt) or chip % STEP:
        return chip
    shared = overlap_for(ckpt, None, overlap)
    candidates = [chip, *range((chip // STEP + 1) * STEP, largest_tile(chip) + 1, STEP)]
    fitting = [tile for tile in candidates if 2 * shared <= tile]  # the overlap at most half a tile
    if not fitting:
        return chip
    return min((computed_pixels(width, height, tile, shared), tile) for tile in fitting)[1]


def computed_pixels(width: int, height: int, tile: int, overlap: int) -> int:
    """Pixels the model computes for a ``width`` × ``height`` scene in tiles of ``tile`` px overlapping
    by ``overlap`` on the global chip grid."""
    grid = ChipGrid.for_scene(width, height, tile, overlap)
    return len(grid) * tile * tile
