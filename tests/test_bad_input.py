"""Bad input, table-driven: every case names the input, the error class and a message fragment.

Three tables:

- `API_CASES`: the Python API (`distort`, `deepcorrect`, `qrnet`) raises
  `ValueError` or `TypeError` naming the argument and the allowed values.
- `CLI_CASES`: `distort.cli.main`, `deepcorrect.cli.main` and `qrnet.cli.main`,
  run in-process, print exactly one stderr line starting with "error:" and exit
  with status 2, without a traceback and without leaving a file; `USAGE_CASES`:
  argparse's usage error for a missing or invalid flag (exit 2).
- `test_command_lines_in_fresh_processes`: the three `python -m` entry points in
  real subprocesses (one each, run concurrently), so the one-line contract is
  checked on the actual process stderr and exit status.

Plus the inputs that must be accepted: grayscale, palette and RGBA files in a
folder are converted to RGB, and a non-image file in a folder is skipped and
counted by default (`on_bad_file="skip"`) or fails with `on_bad_file="raise"`.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import deepcorrect
import distort
import qrnet
from deepcorrect import cli as deepcorrect_cli
from distort import cli as distort_cli
from distort import codecs, pipeline, presets
from robustkit import data
from qrnet import cli as qrnet_cli

REPO = Path(__file__).resolve().parents[1]
SIZE = 16


# ---------------------------------------------------------------------------
# Shared inputs, built once.


def _tiny(name: str = "tiny", conv1: int = 4) -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            keras.layers.Conv2D(conv1, 3, name="conv1"),
            keras.layers.ReLU(name="relu1"),
            keras.layers.Conv2D(6, 3, name="conv2"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(5, name="logits"),
        ],
        name=name,
    )


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares `width` x `height` pixels but holds no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


@dataclasses.dataclass
class Env:
    root: Path
    model: keras.Model
    other: keras.Model  # same layer names and model name, conv1 has 8 filters
    mlp: keras.Model  # no conv layer
    ranking: deepcorrect.Ranking
    images: np.ndarray
    labels: np.ndarray
    serving: Any  # the loaded SavedModel
    restorer: keras.Model  # a small QRNet

    def path(self, name: str) -> str:
        return os.fspath(self.root / name)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Env:
    root = tmp_path_factory.mktemp("bad_input")
    rng = np.random.default_rng(0)
    model, other = _tiny(), _tiny(conv1=8)
    mlp = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3, name="dense")], name="mlp")
    model.save(root / "model.keras")
    other.save(root / "other.keras")
    ranking = deepcorrect.Ranking(
        {"conv1": np.array([0.4, 0.1, 0.3, 0.2]), "conv2": np.linspace(0, 1, 6)},
        model_name="tiny", filter_counts={"conv1": 4, "conv2": 6},
        distortion="gaussian_blur", levels=[1.0],
    )
    ranking.save(root / "ranking.json")
    (root / "malformed.json").write_text('{"format": "deepcorrect.ranking", "layer_names": [')
    (root / "list.json").write_text("[1, 2, 3]")
    (root / "untagged.json").write_text('{"layer_names": []}')
    (root / "fieldless.json").write_text('{"format": "deepcorrect.ranking"}')
    (root / "exists.png").write_bytes(b"already here")
    (root / "exists.keras").write_bytes(b"already here")
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.txt.jpg").write_text("this is text, not a JPEG")
    (root / "huge.png").write_bytes(_png_header(20_000, 20_000))
    (root / "a_directory.keras").mkdir()
    photo = rng.integers(0, 256, [40, 40, 3], dtype=np.uint8)
    Image.fromarray(photo).save(root / "photo.png")
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, "JPEG", quality=90)
    (root / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 3])
    images = rng.integers(0, 256, [4, SIZE, SIZE, 3], dtype=np.uint8)
    labels = np.arange(4) % 5
    np.savez(root / "data.npz", x_train=images, y_train=labels, x_test=images, y_test=labels)
    np.savez(root / "pickled.npz", x_train=np.array([{"a": 1}], dtype=object), y_train=labels[:1])
    np.savez(root / "rgba.npz", x=rng.integers(0, 256, [2, SIZE, SIZE, 4], dtype=np.uint8))
    np.savez(root / "rank2.npz", x=images[0, ..., 0])
    np.savez(root / "nolabels.npz", x=images)
    np.savez(root / "exists.npz", x=images)
    inputs = keras.Input((SIZE, SIZE, 3))
    keras.Model(inputs, keras.layers.Lambda(lambda t: t / 255.0)(inputs)).save(root / "lambda.keras")
    serving = tf.saved_model.load(
        deepcorrect.export(model, root / "serving", preprocess="unit"))
    keras.utils.set_random_seed(0)
    restorer = qrnet.build_qrnet(base_width=4, depth=2)
    restorer.save(root / "restorer.keras")
    (root / "done").mkdir()
    (root / "done" / "restorer.keras").write_bytes(b"a finished run")
    (root / "exported" / "restorer").mkdir(parents=True)
    return Env(root, model, other, mlp, ranking, images, labels, serving, restorer)


# ---------------------------------------------------------------------------
# The Python API.


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    call: Callable[[Env], Any]
    error: type[BaseException]
    fragment: str


U8 = np.zeros([2, SIZE, SIZE, 3], np.uint8)
F32 = np.zeros([2, SIZE, SIZE, 3], np.float32)


def _with_value(value: float) -> np.ndarray:
    out = F32.copy()
    out[1, 3, 4, 2] = value
    return out


def _without_glymur(env: Env):
    original = codecs.glymur_available
    codecs.glymur_available = lambda: False
    try:
        return distort.jpeg2000(U8, 30, backend="glymur")
    finally:
        codecs.glymur_available = original


def _serve(env: Env, images) -> Any:
    return env.serving.signatures["serving_default"](images=images)


def _train_restorer(env: Env, images=None, labels=None, distortions=None, **kwargs):
    trainer = qrnet.QualityRecoveryTrainer(env.restorer, mode="recnet")
    images = env.images if images is None else images
    return qrnet.train(trainer, images, env.labels if labels is None else labels,
                       distortions or {"awgn": [10.0]}, batch_size=4, verbose=0,
                       **{"epochs": 1, **kwargs})


API_CASES = [
    # images
    Case("rank 2 image", lambda e: distort.gaussian_blur(np.zeros([8, 8]), 1.0),
         ValueError, "images must be a batch [N, H, W, C] or one image [H, W, C]. Received shape: (8, 8)"),
    Case("rank 5 batch", lambda e: distort.awgn(np.zeros([1, 2, 8, 8, 3]), 5.0),
         ValueError, "Received shape: (1, 2, 8, 8, 3)"),
    Case("4 channels", lambda e: distort.contrast(np.zeros([1, 8, 8, 4], np.uint8), 0.5),
         ValueError, "images must have 1 (gray) or 3 (RGB) channels. Received 4 channels"),
    Case("2 channels in a pipeline", lambda e: pipeline.training_dataset(
        np.zeros([4, 8, 8, 2], np.uint8), np.zeros(4), "awgn", [10]),
         ValueError, "images must be a non-empty batch [N, H, W, C] with 1 or 3 channels"),
    Case("NaN pixel", lambda e: distort.gaussian_blur(_with_value(np.nan), 1.0),
         ValueError, "images must be finite"),
    Case("inf pixel", lambda e: distort.jpeg(_with_value(np.inf), 50),
         ValueError, "images must be finite"),
    Case("NaN pixel in ranking images", lambda e: deepcorrect.rank(
        e.model, _with_value(np.nan)[:2], e.labels[:2], "awgn", [10], progress=False),
         ValueError, "images must be finite"),
    Case("empty batch", lambda e: distort.awgn(np.zeros([0, 8, 8, 3], np.uint8), 10.0, seed=0),
         ValueError, "images must not be empty. Received shape: (0, 8, 8, 3)"),
    Case("empty ranking batch", lambda e: deepcorrect.rank(
        e.model, e.images[:0], e.labels[:0], "awgn", [10], progress=False),
         ValueError, "images must be a non-empty batch"),
    Case("int32 pixels", lambda e: distort.awgn(np.zeros([1, 8, 8, 3], np.int32), 10.0),
         TypeError, "images must be uint8 or float (0..255). Received dtype: int32"),
    Case("0-byte file", lambda e: data.read_image(e.path("empty.jpg")),
         ValueError, "image file is empty (0 bytes)"),
    Case("truncated JPEG", lambda e: data.read_image(e.path("truncated.jpg")),
         ValueError, "not a readable image"),
    Case("text file named .jpg", lambda e: data.read_image(e.path("notes.txt.jpg")),
         ValueError, "not a readable image (UnidentifiedImageError"),
    Case("huge image (400 megapixels)", lambda e: data.read_image(e.path("huge.png")),
         ValueError, "image is too large"),
    # distortions
    Case("unknown distortion", lambda e: distort.apply(U8, "gausian_blur", 1.0),
         ValueError, "name must be one of ['awgn', 'camera_shake'"),
    Case("unknown distortion in a pipeline", lambda e: pipeline.training_dataset(
        U8, np.zeros(2), "blurr", [1.0]),
         ValueError, "Received: name='blurr'"),
    Case("unknown preset", lambda e: presets.levels("dodge", "awgn"),
         ValueError, "preset must be one of ['deepcorrect_cifar', 'deepcorrect_imagenet', 'dodge_karam'"),
    Case("distortion not in preset", lambda e: presets.levels("qrnet", "jpeg"),
         ValueError, "distortion must be one of ['awgn', 'gaussian_blur'] for preset 'qrnet'"),
    Case("negative sigma", lambda e: distort.gaussian_blur(U8, -1.0),
         ValueError, "sigma must be a finite number >= 0.0. Received: sigma=-1.0"),
    Case("NaN noise level", lambda e: distort.awgn(U8, float("nan"), seed=0),
         ValueError, "sigma must be a finite number >= 0.0. Received: sigma=nan"),
    Case("infinite radius", lambda e: distort.defocus_blur(U8, float("inf")),
         ValueError, "radius must be a finite number >= 0.0. Received: radius=inf"),
    Case("one negative per-image level", lambda e: distort.gaussian_blur(U8, np.array([1.0, -2.0])),
         ValueError, "Received: sigma=-2.0"),
    Case("level given as a string", lambda e: distort.gaussian_blur(U8, "2"),
         TypeError, "sigma must be a real number"),
    Case("negative level in a training pipeline", lambda e: pipeline.training_dataset(
        U8, np.zeros(2), "awgn", [10.0, -5.0]),
         ValueError, "levels must be a finite number >= 0.0. Received: levels=-5.0"),
    Case("NaN level in a training pipeline", lambda e: pipeline.training_dataset(
        U8, np.zeros(2), "gaussian_blur", [float("nan")]),
         ValueError, "Received: levels=nan"),
    Case("JPEG quality 0", lambda e: distort.jpeg(U8, 0),
         ValueError, "quality must be a finite number [1, 100]. Received: quality=0.0"),
    Case("JPEG quality 101", lambda e: distort.jpeg(U8, 101),
         ValueError, "quality must be a finite number [1, 100]. Received: quality=101.0"),
    Case("JPEG quality 10.5", lambda e: distort.jpeg(U8, 10.5),
         ValueError, "quality must be an integer in 1..100"),
    Case("JPEG quality 0 in a pipeline", lambda e: pipeline.training_dataset(
        U8, np.zeros(2), "jpeg", [10, 0]),
         ValueError, "levels must be a finite number [1.0, 100.0]"),
    Case("JPEG2000 target 5 dB", lambda e: distort.jpeg2000(U8, 5),
         ValueError, "psnr must be a finite number [10.0, 80.0]. Received: psnr=5.0"),
    Case("JPEG2000 target 90 dB", lambda e: distort.jpeg2000(U8, 90),
         ValueError, "psnr must be a finite number [10.0, 80.0]. Received: psnr=90.0"),
    Case("JPEG2000 unknown backend", lambda e: distort.jpeg2000(U8, 30, backend="kakadu"),
         ValueError, "backend must be one of ('pillow', 'glymur')"),
    Case("JPEG2000 glymur without libopenjp2", _without_glymur,
         ValueError, "use backend='pillow' instead"),
    Case("camera_shake level 2", lambda e: distort.apply(U8, "camera_shake", 2),
         ValueError, "level must be 0 (off) or 1 (on) for 'camera_shake'"),
    Case("unknown border", lambda e: distort.gaussian_blur(U8, 1.0, border="wrap"),
         ValueError, "border must be one of ('reflect', 'constant', 'nearest', 'mirror')"),
    # ranking and wrapping
    Case("Ranking of a model with other filter counts", lambda e: deepcorrect.wrap(e.other, e.ranking),
         ValueError, "ranking was made for a model whose layer 'conv1' has 4 filters"),
    Case("Ranking.load for another model",
         lambda e: deepcorrect.Ranking.load(e.path("ranking.json"), model=e.other),
         ValueError, "has 4 filters but the model's layer has 8"),
    Case("unknown layer in ranking", lambda e: deepcorrect.wrap(e.model, {"conv9": [0, 1, 2, 3]}),
         ValueError, "ranking names an unknown layer 'conv9'. Allowed values (the model's conv layers): ['conv1', 'conv2']"),
    Case("unknown layer in layers=", lambda e: deepcorrect.wrap(e.model, e.ranking, layers=["conv3"]),
         ValueError, "layers names an unknown layer 'conv3'"),
    Case("unknown layer to rank", lambda e: deepcorrect.rank(
        e.model, e.images, e.labels, "awgn", [10], layers=["conv3"], progress=False),
         ValueError, "'conv3' is not a layer of model 'tiny'. Conv layers: ['conv1', 'conv2']"),
    Case("channel index out of range", lambda e: deepcorrect.wrap(e.model, {"conv1": [0, 1, 2, 4]}),
         ValueError, "ranking['conv1'] must hold integers in [0, 4); [4] are out of range"),
    Case("negative channel index", lambda e: deepcorrect.wrap(e.model, {"conv1": [-1, 0, 1, 2]}),
         ValueError, "[-1] are out of range"),
    Case("duplicated channel index", lambda e: deepcorrect.wrap(e.model, {"conv1": [2, 2, 0, 1]}),
         ValueError, "ranking['conv1'] must not repeat a channel; [2] appear more than once"),
    Case("beta 0", lambda e: deepcorrect.wrap(e.model, e.ranking, beta=0),
         ValueError, "beta must be in (0, 1]. Received: beta=0"),
    Case("beta 1.5", lambda e: deepcorrect.wrap(e.model, e.ranking, beta=1.5),
         ValueError, "beta must be in (0, 1]. Received: beta=1.5"),
    Case("beta NaN", lambda e: deepcorrect.wrap(e.model, e.ranking, beta=float("nan")),
         ValueError, "beta must be in (0, 1]. Received: beta=nan"),
    Case("per-layer beta -0.1", lambda e: deepcorrect.wrap(e.model, e.ranking, beta={"conv1": 0.5, "conv2": -0.1}),
         ValueError, "beta['conv2'] must be in (0, 1]"),
    Case("Dense layer to correct", lambda e: deepcorrect.wrap(e.model, {"logits": [0, 1, 2, 3, 4]}),
         ValueError, "ranking names 'logits', a Dense layer, but only conv layers"),
    Case("Dense layer to rank", lambda e: deepcorrect.rank(
        e.model, e.images, e.labels, "awgn", [10], layers=["logits"], progress=False),
         ValueError, "'logits' is not a conv layer of model 'tiny'"),
    Case("unknown unit preset", lambda e: deepcorrect.wrap(e.model, e.ranking, unit="huge"),
         ValueError, "unit must be one of ['bottleneck', 'cw', 'lite', 'no_bn']. Received: unit='huge'"),
    Case("wrap a model with no conv layer", lambda e: deepcorrect.wrap(e.mlp, {"dense": [0, 1, 2]}),
         ValueError, "model 'mlp' has no conv layers"),
    Case("rank a model with no conv layer", lambda e: deepcorrect.rank(
        e.mlp, np.zeros([2, 8]), np.zeros(2, int), "awgn", [10], progress=False),
         ValueError, "Model 'mlp' has no conv layer to rank"),
    Case("finetune a model with no conv layer", lambda e: deepcorrect.finetune(e.mlp, 1),
         ValueError, "model 'mlp' has no conv layers"),
    Case("finetune k=3 of 2 conv layers", lambda e: deepcorrect.finetune(e.model, 3),
         ValueError, "k must be an integer in [1, 2] (the model has 2 conv layers) or 'all'. Received: k=3"),
    Case("train with an unknown recipe", lambda e: deepcorrect.train(
        deepcorrect.wrap(e.model, e.ranking), e.images, e.labels, "awgn", [10], preset="gpu_slow"),
         ValueError, "preset must be one of ['cpu_quick', 'deepcorrect_cifar', 'deepcorrect_imagenet', 'label_free']"),
    Case("train at a negative level", lambda e: deepcorrect.train(
        deepcorrect.wrap(e.model, e.ranking), e.images, e.labels, "awgn", [10, -10],
        preset="cpu_quick", epochs=1, verbose=0),
         ValueError, "levels must be a finite number >= 0.0. Received: levels=-10.0"),
    # files
    Case("missing image path", lambda e: data.read_image(e.path("nope.jpg")),
         ValueError, "path does not exist"),
    Case("directory where an image file is expected", lambda e: data.read_image(e.root),
         ValueError, "path must be a file, not a directory"),
    Case("file where a folder is expected", lambda e: data.load_image_folder(e.path("photo.png")),
         ValueError, "path must be a directory"),
    Case("missing CIFAR-10 file", lambda e: data.load_cifar10(e.path("cifar.npz")),
         ValueError, "path does not exist"),
    Case("unknown on_bad_file", lambda e: data.load_image_folder(e.root, on_bad_file="ignore"),
         ValueError, "on_bad_file must be one of ('skip', 'raise'). Received: on_bad_file='ignore'"),
    Case("malformed JSON ranking", lambda e: deepcorrect.Ranking.load(e.path("malformed.json")),
         json.JSONDecodeError, "Expecting value"),  # a ValueError subclass
    Case("JSON that is no ranking", lambda e: deepcorrect.Ranking.load(e.path("untagged.json")),
         ValueError, "Not a deepcorrect ranking (missing format tag)"),
    # qrnet: the restorer, the trainer, restoring
    Case("QRNet base width 0", lambda e: qrnet.build_qrnet(base_width=0),
         ValueError, "base_width must be an integer >= 1. Received: base_width=0"),
    Case("QRNet base width given as text", lambda e: qrnet.build_qrnet(base_width="8"),
         TypeError, "base_width must be an integer >= 1. Received: base_width='8'"),
    Case("QRNet depth 0", lambda e: qrnet.build_qrnet(depth=0),
         ValueError, "depth must be an integer in [1, 8]. Received: depth=0"),
    Case("QRNet depth 40", lambda e: qrnet.build_qrnet(base_width=1, depth=40),
         ValueError, "depth must be an integer in [1, 8]. Received: depth=40"),
    Case("QRNet depth 2.5", lambda e: qrnet.build_qrnet(depth=2.5),
         TypeError, "depth must be an integer in [1, 8]. Received: depth=2.5"),
    Case("QRNet dropout 1", lambda e: qrnet.build_qrnet(dropout=1.0),
         ValueError, "dropout must be in [0, 1). Received: dropout=1.0"),
    Case("unknown QRNet preset", lambda e: qrnet.qrnet_from_preset("huge"),
         ValueError, "preset must be one of ['qrnet_cpu', 'qrnet_paper', 'qrnet_small_paper', 'qrnet_tiny']"),
    Case("negative lambda", lambda e: qrnet.QualityRecoveryTrainer(e.restorer, e.model, lambdas=-0.1),
         ValueError, "lambdas must be finite numbers >= 0. Received: lambdas=[-0.1]"),
    Case("NaN lambda", lambda e: qrnet.QualityRecoveryTrainer(e.restorer, e.model, lambdas=float("nan")),
         ValueError, "lambdas must be finite numbers >= 0. Received: lambdas=[nan]"),
    Case("one lambda for two classifiers", lambda e: qrnet.QualityRecoveryTrainer(
        e.restorer, [e.model, e.other], lambdas=[0.1]),
         ValueError, "lambdas must have one entry per classifier (2). Received: lambdas=[0.1]"),
    Case("unknown mode", lambda e: qrnet.QualityRecoveryTrainer(e.restorer, e.model, mode="fancy"),
         ValueError, "mode must be one of ('recnet', 'qrnet', 'mqrnet', 'end_to_end'). Received: mode='fancy'"),
    Case("mode qrnet with two classifiers", lambda e: qrnet.QualityRecoveryTrainer(
        e.restorer, [e.model, e.other], mode="qrnet"),
         ValueError, "mode 'qrnet' needs exactly 1 classifier. Received: 2"),
    Case("mode recnet with a lambda", lambda e: qrnet.QualityRecoveryTrainer(
        e.restorer, e.model, mode="recnet", lambdas=0.1),
         ValueError, "lambdas must be 0 in mode 'recnet'. Received: lambdas=[0.1]"),
    Case("unknown classifier preprocessing", lambda e: qrnet.QualityRecoveryTrainer(
        e.restorer, e.model, preprocessing="zscore"),
         ValueError, "preprocessing: mode must be one of ['caffe', 'none', 'raw', 'symmetric', 'tf', 'torch', 'unit']"),
    Case("classifier preprocessing given as a number", lambda e: qrnet.QualityRecoveryTrainer(
        e.restorer, e.model, preprocessing=3),
         TypeError, "preprocessing must be None, a mode name, a layer or a function. Received: preprocessing=3"),
    Case("end_to_end with more head layers than Dense layers", lambda e: qrnet.QualityRecoveryTrainer(
        e.restorer, e.model, mode="end_to_end", head_layers=2),
         ValueError, "head_layers must be between 1 and the number of Dense layers of 'tiny' (1). Received: head_layers=2"),
    Case("unknown distortion for QRNet", lambda e: qrnet.resolve_distortions({"blurr": [1.0]}),
         ValueError, "name must be one of ['awgn', 'camera_shake'"),
    Case("negative distortion level for QRNet", lambda e: qrnet.resolve_distortions({"awgn": [10.0, -5.0]}),
         ValueError, "levels must be a finite number >= 0.0. Received: levels=-5.0"),
    Case("no distortion level for QRNet", lambda e: qrnet.resolve_distortions({"awgn": []}),
         ValueError, "distortions must name at least one level. Received: {'awgn': []}"),
    Case("odd QRNet batch size", lambda e: qrnet.paired_batches(e.images, e.labels, {"awgn": [10.0]}, batch_size=3),
         ValueError, "batch_size must be an even integer >= 2. Received: batch_size=3"),
    Case("QRNet training for 0 epochs", lambda e: _train_restorer(e, epochs=0),
         ValueError, "epochs must be an integer >= 1. Received: epochs=0"),
    Case("QRNet learning rate 0", lambda e: _train_restorer(e, learning_rate=0.0),
         ValueError, "learning_rate must be a finite number > 0. Received: learning_rate=0.0"),
    Case("QRNet patience -1", lambda e: _train_restorer(e, patience=-1),
         ValueError, "patience must be an integer >= 0 or None. Received: patience=-1"),
    Case("QRNet labels of another length", lambda e: _train_restorer(e, labels=e.labels[:3]),
         ValueError, "images and labels must have the same length. Received: 4 images and 3 labels"),
    Case("QRNet training on gray images", lambda e: _train_restorer(e, images=e.images[..., :1]),
         ValueError, "images must have 3 channels (the restorer's input). Received shape: (4, 16, 16, 1)"),
    Case("QRNet training on one image", lambda e: _train_restorer(e, images=e.images[0]),
         ValueError, "images must have shape (n, h, w, c). Received: (16, 16, 3)"),
    Case("unknown checkpoint phase", lambda e: qrnet.TrainingCheckpoint(e.path("ck"), phase="warmup"),
         ValueError, "phase must be one of ('pretrain', 'main'). Received: phase='warmup'"),
    Case("restore a rank-2 array", lambda e: qrnet.restore(e.restorer, np.zeros([4, 4])),
         ValueError, "images must have shape (n, h, w, c) or (h, w, c). Received: (4, 4)"),
    Case("restore RGBA images", lambda e: qrnet.restore(e.restorer, np.zeros([1, SIZE, SIZE, 4])),
         ValueError, "images must have 3 channels (the restorer's input). Received shape: (1, 16, 16, 4)"),
    Case("restore a NaN pixel", lambda e: qrnet.restore(e.restorer, _with_value(np.nan)),
         ValueError, "images must be finite (no NaN or inf pixels)"),
    Case("restore text", lambda e: qrnet.restore(e.restorer, np.array([["a"]])),
         TypeError, "images must be numbers on 0..255. Received dtype: <U1"),
    Case("restore with batch size 0", lambda e: qrnet.restore(e.restorer, F32, batch_size=0),
         ValueError, "batch_size must be an integer >= 1. Received: batch_size=0"),
    Case("pickled .npz", lambda e: data.read_npz(e.path("pickled.npz")),
         ValueError, "pickled.npz without pickle (Object arrays cannot be loaded when allow_pickle=False)"),
    Case("text file as .npz", lambda e: data.read_npz(e.path("notes.txt.jpg")),
         ValueError, "not a readable .npz file (no zip header)"),
    # serving
    Case("SavedModel given float32", lambda e: _serve(e, tf.zeros([1, SIZE, SIZE, 3])),
         tf.errors.InvalidArgumentError, "was expected to be a uint8 tensor but is a float tensor"),
    Case("SavedModel given the wrong size", lambda e: _serve(e, tf.zeros([1, 8, SIZE, 3], tf.uint8)),
         tf.errors.InvalidArgumentError, f"images must be uint8 [N, {SIZE}, {SIZE}, 3]; got shape"),
    Case("SavedModel given one image without a batch axis",
         lambda e: _serve(e, tf.zeros([SIZE, SIZE, 3], tf.uint8)),
         tf.errors.InvalidArgumentError, f"images must be uint8 [N, {SIZE}, {SIZE}, 3]; got shape"),
    Case("SavedModel given 4 channels", lambda e: _serve(e, tf.zeros([1, SIZE, SIZE, 4], tf.uint8)),
         tf.errors.InvalidArgumentError, f"images must be uint8 [N, {SIZE}, {SIZE}, 3]; got shape"),
    Case("SavedModel bytes signature given pixels", lambda e: e.serving.signatures["serving_bytes"](
        image_bytes=tf.zeros([1, SIZE, SIZE, 3], tf.uint8)),
         tf.errors.InvalidArgumentError, "was expected to be a string tensor but is a uint8 tensor"),
    Case("SavedModel given undecodable bytes", lambda e: e.serving.signatures["serving_bytes"](
        image_bytes=tf.constant([b"not an image"])),
         tf.errors.InvalidArgumentError, "Unknown image file format"),
]


@pytest.mark.parametrize("case", API_CASES, ids=[c.name for c in API_CASES])
def test_api_refuses_bad_input(env, case):
    with pytest.raises(case.error) as info:
        case.call(env)
    assert type(info.value) is case.error, (
        f"expected exactly {case.error.__name__}, got {type(info.value).__name__}")
    assert case.fragment in str(info.value)


# ---------------------------------------------------------------------------
# The command lines, in-process.


@dataclasses.dataclass(frozen=True)
class CliCase:
    name: str
    main: Callable[[list[str]], int]
    argv: list[str]
    fragment: str


def _apply(*args: str) -> list[str]:
    return ["apply", *args]


def _qtrain(*args: str, data: str = "data.npz", out: str = "q") -> list[str]:
    return ["train", "--data", data, "--preset", "qrnet_tiny", "--distortion", "awgn=10",
            "--epochs", "1", "--batch-size", "4", "--verbose", "0", *args, "--out", out]


def _qrestore(inputs: str, *args: str, model: str = "restorer.keras",
              output: str = "restored.npz") -> list[str]:
    return ["restore", "--model", model, "--input", inputs, "--output", output, *args]


D, C, Q = distort_cli.main, deepcorrect_cli.main, qrnet_cli.main
PHOTO, MODEL, RANKING = "photo.png", "model.keras", "ranking.json"

CLI_CASES = [
    CliCase("apply: missing input", D, _apply("nope.png", "o.png", "--name", "awgn", "--level", "5"),
            "error: path does not exist: nope.png"),
    CliCase("apply: directory as input", D, _apply(".", "o.png", "--name", "awgn", "--level", "5"),
            "error: path must be a file, not a directory"),
    CliCase("apply: 0-byte input", D, _apply("empty.jpg", "o.png", "--name", "awgn", "--level", "5"),
            "error: image file is empty (0 bytes)"),
    CliCase("apply: truncated JPEG", D, _apply("truncated.jpg", "o.png", "--name", "awgn", "--level", "5"),
            "error: not a readable image"),
    CliCase("apply: unknown distortion", D, _apply(PHOTO, "o.png", "--name", "blur", "--level", "1"),
            "error: name must be one of ['awgn',"),
    CliCase("apply: negative level", D, _apply(PHOTO, "o.png", "--name", "gaussian_blur", "--level", "-1"),
            "error: sigma must be a finite number >= 0.0. Received: sigma=-1.0"),
    CliCase("apply: inf level", D, _apply(PHOTO, "o.png", "--name", "awgn", "--level", "inf"),
            "error: sigma must be a finite number >= 0.0. Received: sigma=inf"),
    CliCase("apply: JPEG quality 0", D, _apply(PHOTO, "o.png", "--name", "jpeg", "--level", "0"),
            "error: quality must be a finite number [1, 100]"),
    CliCase("apply: JPEG2000 at 99 dB", D, _apply(PHOTO, "o.png", "--name", "jpeg2000", "--level", "99"),
            "error: psnr must be a finite number [10.0, 80.0]"),
    CliCase("apply: output exists", D, _apply(PHOTO, "exists.png", "--name", "awgn", "--level", "5"),
            "error: output exists: exists.png (pass --overwrite to replace it)"),
    CliCase("apply: output without an image suffix", D,
            _apply(PHOTO, "o.xyz", "--name", "awgn", "--level", "5"),
            "error: output must end in an image suffix"),
    CliCase("show: unknown preset", D, ["show", PHOTO, "grid.png", "--preset", "paper"],
            "error: preset must be one of ['deepcorrect_cifar'"),
    CliCase("sweep: missing model file", D, ["sweep", "--model", "nope.keras", "--data", ".", "--out", "s"],
            "error: model file not found: nope.keras"),
    CliCase("wrap: ranking of another model", C,
            ["wrap", "--model", "other.keras", "--ranking", RANKING, "--out", "w.keras"],
            "error: --ranking does not fit --model: Ranking layer 'conv1' has 4 filters"),
    CliCase("wrap: malformed JSON ranking", C,
            ["wrap", "--model", MODEL, "--ranking", "malformed.json", "--out", "w.keras"],
            "error: --ranking is not valid JSON (Expecting value"),
    CliCase("wrap: JSON list as ranking", C,
            ["wrap", "--model", MODEL, "--ranking", "list.json", "--out", "w.keras"],
            "error: --ranking is not a deepcorrect ranking (a JSON object is expected, found list)"),
    CliCase("wrap: ranking without fields", C,
            ["wrap", "--model", MODEL, "--ranking", "fieldless.json", "--out", "w.keras"],
            "error: --ranking is not a deepcorrect ranking (bad or missing field 'layer_names')"),
    CliCase("wrap: missing ranking", C, ["wrap", "--model", MODEL, "--ranking", "nope.json", "--out", "w.keras"],
            "error: --ranking file not found: nope.json"),
    CliCase("wrap: directory as ranking", C, ["wrap", "--model", MODEL, "--ranking", ".", "--out", "w.keras"],
            "error: --ranking must be a JSON file, not a directory"),
    CliCase("wrap: beta 0", C, ["wrap", "--model", MODEL, "--ranking", RANKING, "--beta", "0", "--out", "w.keras"],
            "error: beta must be in (0, 1]. Received: beta=0.0"),
    CliCase("wrap: beta 2", C, ["wrap", "--model", MODEL, "--ranking", RANKING, "--beta", "2", "--out", "w.keras"],
            "error: beta must be in (0, 1]. Received: beta=2.0"),
    CliCase("wrap: output exists", C, ["wrap", "--model", MODEL, "--ranking", RANKING, "--out", "exists.keras"],
            "error: output exists: exists.keras (pass --overwrite to replace it)"),
    CliCase("wrap: output not .keras", C, ["wrap", "--model", MODEL, "--ranking", RANKING, "--out", "w.h5"],
            "error: --out must end in .keras. Received: w.h5"),
    CliCase("wrap: missing model", C, ["wrap", "--model", "nope.keras", "--ranking", RANKING, "--out", "w.keras"],
            "error: model file not found: nope.keras"),
    CliCase("wrap: directory as model", C,
            ["wrap", "--model", "a_directory.keras", "--ranking", RANKING, "--out", "w.keras"],
            "error: --model must be a .keras file, not a directory"),
    CliCase("wrap: text file as model", C,
            ["wrap", "--model", "exists.keras", "--ranking", RANKING, "--out", "w.keras"],
            "error: --model: exists.keras is not a Keras model file (not a zip archive)"),
    CliCase("finetune: k not a number", C, ["finetune", "--model", MODEL, "--k", "first", "--out", "f.keras"],
            "error: --k must be an integer or 'all'. Received: --k first"),
    CliCase("finetune: k too large", C, ["finetune", "--model", MODEL, "--k", "7", "--out", "f.keras"],
            "error: k must be an integer in [1, 2]"),
    CliCase("rank: unknown layer", C, ["rank", "--model", MODEL, "--data", "data.npz", "--distortion",
                                       "awgn", "--layers", "conv7", "--out", "r.json"],
            "error: layers: 'conv7' is not a layer of model 'tiny'"),
    CliCase("rank: missing data", C, ["rank", "--model", MODEL, "--data", "nope.npz", "--distortion",
                                      "awgn", "--out", "r.json"],
            "error: --data: path does not exist: nope.npz"),
    CliCase("rank: output exists", C, ["rank", "--model", MODEL, "--data", "data.npz", "--distortion",
                                       "awgn", "--out", RANKING],
            "error: output exists: ranking.json"),
    CliCase("train: negative level", C, ["train", "--model", MODEL, "--data", "data.npz", "--distortion",
                                         "awgn", "--levels", "-3", "--recipe", "cpu_quick", "--out", "t.keras"],
            "error: levels must be a finite number >= 0.0. Received: levels=-3.0"),
    CliCase("export: unknown preprocessing", C, ["export", "--model", MODEL, "--preprocess", "zscore",
                                                 "--out", "srv"],
            "error: preprocess must be None, a function, or one of"),
    CliCase("wrap: model with a Lambda layer", C,
            ["wrap", "--model", "lambda.keras", "--ranking", RANKING, "--out", "w.keras"],
            "error: --model is not a loadable .keras model ("),
    CliCase("rank: pickled .npz", C, ["rank", "--model", MODEL, "--data", "pickled.npz",
                                      "--distortion", "awgn", "--out", "r.json"],
            "error: --data: cannot read pickled.npz without pickle"),
    # qrnet
    CliCase("qrnet train: base width 0", Q, _qtrain("--base-width", "0"),
            "error: base_width must be an integer >= 1. Received: base_width=0"),
    CliCase("qrnet train: depth 12", Q, _qtrain("--depth", "12"),
            "error: depth must be an integer in [1, 8]. Received: depth=12"),
    CliCase("qrnet train: dropout 1.5", Q, _qtrain("--dropout", "1.5"),
            "error: dropout must be in [0, 1). Received: dropout=1.5"),
    CliCase("qrnet train: negative lambda", Q, _qtrain("--classifier", MODEL, "--lambda", "-1"),
            "error: lambdas must be finite numbers >= 0. Received: lambdas=[-1.0]"),
    CliCase("qrnet train: lambda in recnet mode", Q, _qtrain("--classifier", MODEL, "--mode", "recnet",
                                                            "--lambda", "0.5"),
            "error: lambdas must be 0 in mode 'recnet'. Received: lambdas=[0.5]"),
    CliCase("qrnet train: unknown mode", Q, _qtrain("--mode", "fancy"),
            "error: qrnet train: argument --mode: invalid choice: 'fancy' (choose from"),
    CliCase("qrnet train: unknown distortion", Q, _qtrain("--distortion", "blurr=1"),
            "error: --distortion names must be among ['awgn',"),
    CliCase("qrnet train: negative level", Q, _qtrain("--distortion", "awgn=-5"),
            "error: levels must be a finite number >= 0.0. Received: levels=-5.0"),
    CliCase("qrnet train: unknown level preset", Q, _qtrain("--levels", "paper"),
            "error: qrnet train: argument --levels: invalid choice: 'paper'"),
    CliCase("qrnet train: missing classifier", Q, _qtrain("--classifier", "nope.keras"),
            "error: model file not found: nope.keras"),
    CliCase("qrnet train: classifier with a Lambda layer", Q, _qtrain("--classifier", "lambda.keras"),
            "error: --classifier is not a loadable .keras model ("),
    CliCase("qrnet train: output exists", Q, _qtrain(out="done"),
            "error: output exists: done/restorer.keras (pass --overwrite to replace it)"),
    CliCase("qrnet train: validation fraction 1.5", Q, _qtrain("--val-fraction", "1.5"),
            "error: --val-fraction must be in [0, 1). Received: 1.5"),
    CliCase("qrnet train: odd batch size", Q, _qtrain("--batch-size", "3"),
            "error: batch_size must be an even integer >= 2. Received: batch_size=3"),
    CliCase("qrnet train: 0 epochs", Q, _qtrain("--epochs", "0"),
            "error: epochs must be an integer >= 1. Received: epochs=0"),
    CliCase("qrnet train: data without labels", Q, _qtrain(data="nolabels.npz"),
            "error: --data needs labels for training: nolabels.npz"),
    CliCase("qrnet train: pickled data", Q, _qtrain(data="pickled.npz"),
            "error: --data: cannot read pickled.npz without pickle"),
    CliCase("qrnet train: missing data", Q, _qtrain(data="nope.npz"),
            "error: --data: path does not exist: nope.npz"),
    CliCase("qrnet restore: RGBA images", Q, _qrestore("rgba.npz"),
            "error: images must have 3 channels (the restorer's input). Received shape: (2, 16, 16, 4)"),
    CliCase("qrnet restore: one gray image", Q, _qrestore("rank2.npz"),
            "error: images must have shape (n, h, w, c) or (h, w, c). Received: (16, 16)"),
    CliCase("qrnet restore: pickled input", Q, _qrestore("pickled.npz", "--key", "x_train"),
            "error: cannot read pickled.npz without pickle"),
    CliCase("qrnet restore: unknown key", Q, _qrestore("data.npz", "--key", "pixels"),
            "error: --key 'pixels' not in data.npz. Found: x_train, y_train, x_test, y_test"),
    CliCase("qrnet restore: output exists", Q, _qrestore("data.npz", output="exists.npz"),
            "error: output exists: exists.npz (pass --overwrite to replace it)"),
    CliCase("qrnet restore: .png output for .npz input", Q, _qrestore("data.npz", output="o.png"),
            "error: --output must be an .npz file for .npz input. Received: o.png"),
    CliCase("qrnet restore: model with a Lambda layer", Q, _qrestore("data.npz", model="lambda.keras"),
            "error: --model is not a loadable .keras model ("),
    CliCase("qrnet restore: directory as model", Q, _qrestore("data.npz", model="a_directory.keras"),
            "error: --model must be a .keras file, not a directory: a_directory.keras"),
    CliCase("qrnet restore: model file that is not .keras", Q, _qrestore("data.npz", model="photo.png"),
            "error: --model must be a .keras file. Received: photo.png"),
    CliCase("qrnet evaluate: two classifiers", Q, ["evaluate", "--classifier", MODEL, "--classifier", MODEL,
                                                   "--data", "data.npz"],
            "error: evaluate needs exactly one --classifier. Received: 2"),
    CliCase("qrnet export: output exists", Q, ["export", "--model", "restorer.keras", "--out", "exported"],
            "error: output exists: exported/restorer (pass --overwrite to replace it)"),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.name for c in CLI_CASES])
def test_cli_prints_one_error_line(env, case, capsys, monkeypatch):
    monkeypatch.chdir(env.root)
    monkeypatch.delenv("DEEPCORRECT_DEBUG", raising=False)
    before = sorted(p.name for p in env.root.iterdir())
    try:
        status = case.main(case.argv)
    except SystemExit as e:  # qrnet reports usage errors in one line too
        status = e.code
    err = capsys.readouterr().err
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert case.fragment in lines[0]
    assert "Traceback" not in err
    assert sorted(p.name for p in env.root.iterdir()) == before, "a failed command left a file"


USAGE_CASES = [
    ("distort apply: no --level", D, _apply(PHOTO, "o.png", "--name", "awgn"),
     "the following arguments are required: --level"),
    ("distort apply: --level abc", D, _apply(PHOTO, "o.png", "--name", "awgn", "--level", "abc"),
     "argument --level: invalid float value: 'abc'"),
    ("deepcorrect wrap: no --ranking", C, ["wrap", "--model", MODEL, "--out", "w.keras"],
     "the following arguments are required: --ranking"),
    ("deepcorrect rank: bad --site", C, ["rank", "--model", MODEL, "--data", "data.npz", "--distortion", "awgn",
                                         "--site", "middle", "--out", "r.json"],
     "argument --site: invalid choice: 'middle' (choose from 'pre_activation', 'post_activation')"),
]


@pytest.mark.parametrize("name,main,argv,fragment", USAGE_CASES, ids=[c[0] for c in USAGE_CASES])
def test_cli_usage_errors_exit_2(env, name, main, argv, fragment, capsys, monkeypatch):
    monkeypatch.chdir(env.root)
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert err.startswith("usage: ")
    last = err.strip().splitlines()[-1]
    assert "error: " in last and last.endswith(fragment)
    assert "Traceback" not in err


def test_command_lines_in_fresh_processes(env):
    """One bad command per entry point, in real processes: one stderr line, exit 2."""
    runs = {
        "distort": (["-m", "distort", "apply", "truncated.jpg", "o.png", "--name", "jpeg", "--level", "10"],
                    "error: not a readable image"),
        "deepcorrect": (["-m", "deepcorrect", "wrap", "--model", MODEL, "--ranking", "list.json",
                         "--out", "w.keras"], "error: --ranking is not a deepcorrect ranking"),
        "qrnet": (["-m", "qrnet", "restore", "--model", "nope.keras", "--input", "data.npz",
                   "--output", "restored.npz"], "error: model file not found: nope.keras"),
        "qrnet usage": (["-m", "qrnet", "train", "--data", "data.npz", "--out", "q",
                         "--distortion", "blur:1"], "error: qrnet train: argument --distortion"),
    }
    environ = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.fspath(REPO))
    environ.pop("DEEPCORRECT_DEBUG", None)
    procs = {name: subprocess.Popen([sys.executable, *argv], cwd=env.root, env=environ,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, (argv, _) in runs.items()}
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=180)
        # TensorFlow may log to stderr on import; the command's own output is the rest.
        lines = [line for line in err.strip().splitlines()
                 if not _is_tensorflow_log(line)]
        assert proc.returncode == 2, (name, err)
        assert len(lines) == 1, (name, err)
        assert lines[0].startswith(runs[name][1]), (name, err)
        assert "Traceback" not in err
    assert not (env.root / "o.png").exists() and not (env.root / "w.keras").exists()


def _is_tensorflow_log(line: str) -> bool:
    return line.startswith(("WARNING: All log messages", "E0000", "W0000", "I0000")) or (
        "cpu_feature_guard" in line or "oneDNN" in line or "rebuild TensorFlow" in line)


# ---------------------------------------------------------------------------
# Inputs that must be accepted, and the non-image file policy.


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    """Class folders with an RGB JPEG, a grayscale PNG, an RGBA PNG, a palette GIF and a text file."""
    root = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, [24, 24, 3], dtype=np.uint8)
    gray = rng.integers(0, 256, [24, 24], dtype=np.uint8)
    rgba = rng.integers(0, 256, [24, 24, 4], dtype=np.uint8)
    (root / "a").mkdir()
    (root / "b").mkdir()
    Image.fromarray(rgb).save(root / "a" / "1_rgb.png")
    Image.fromarray(gray, "L").save(root / "a" / "2_gray.png")
    Image.fromarray(rgba, "RGBA").save(root / "b" / "3_rgba.png")
    Image.fromarray(rgb).convert("P").save(root / "b" / "4_palette.gif")
    (root / "b" / "5_readme.txt").write_text("not an image")
    return root, {"1_rgb.png": rgb, "2_gray.png": np.repeat(gray[..., None], 3, -1),
                  "3_rgba.png": rgba[..., :3]}


def test_folder_converts_gray_rgba_and_palette_and_skips_text_by_default(mixed_folder):
    root, expected = mixed_folder
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        folder = data.load_image_folder(root, size=24, short_side=24)
    assert folder.images.shape == (4, 24, 24, 3) and folder.images.dtype == np.uint8
    assert folder.labels.tolist() == [0, 0, 1, 1]
    assert folder.skipped == [os.fspath(root / "b" / "5_readme.txt")]
    assert any("skipped 1 unreadable file" in str(w.message) for w in caught)
    names = [Path(f).name for f in folder.files]
    for name, pixels in expected.items():  # gray is replicated, alpha dropped, no resampling
        np.testing.assert_array_equal(folder.images[names.index(name)], pixels)


def test_folder_on_bad_file_raise_names_the_file(mixed_folder):
    root, _ = mixed_folder
    with pytest.raises(ValueError, match=r"not an image file \(suffix '.txt'\).*5_readme.txt"):
        data.load_image_folder(root, size=24, on_bad_file="raise")


def test_folder_with_only_bad_files_fails(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x.jpg").write_bytes(b"")
    (tmp_path / "c" / "y.txt").write_text("text")
    with pytest.warns(UserWarning, match="skipped 2 unreadable file"), \
            pytest.raises(ValueError, match="no readable images in"):
        data.load_image_folder(tmp_path)


def test_gray_image_distorts_with_one_channel():
    gray = np.full([2, 12, 12, 1], 100, np.uint8)
    out = distort.jpeg(gray, 50)
    assert out.shape == (2, 12, 12, 1)
    assert np.abs(np.asarray(out, np.int32) - 100).max() <= 2


def test_glymur_encodes_images_smaller_than_its_default_tiles():
    """OpenJPEG's default six resolutions need 32 px; small images must still encode."""
    if not codecs.glymur_available():
        pytest.skip("glymur / libopenjp2 not installed")
    image = np.random.default_rng(2).integers(0, 256, [1, 8, 8, 3], dtype=np.uint8)
    out = np.asarray(distort.jpeg2000(image, 30, backend="glymur"))
    assert out.shape == image.shape
    mse = np.mean((out[0].astype(np.float64) - image[0]) ** 2)
    assert 20 < 10 * np.log10(255.0**2 / mse) < 45

