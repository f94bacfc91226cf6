"""Loaders of the released ImageNet-C, CIFAR-10-C and CIFAR-100-C layouts, on small trees made here."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from distort import c_datasets


def make_imagenet_c(root, corruptions=("gaussian_noise", "fog"), families=False, size=24):
    """Two wnids x two photos per severity; pixel (0, 0) holds (severity, class, file)."""
    for corruption in corruptions:
        family = {"gaussian_noise": "noise", "fog": "weather"}.get(corruption, "extra")
        base = root / family / corruption if families else root / corruption
        for severity in (1, 2, 3, 4, 5):
            for k, wnid in enumerate(("n01440764", "n01443537")):
                folder = base / str(severity) / wnid
                folder.mkdir(parents=True)
                for j in range(2):
                    image = np.full([size, size, 3], 10 * j, np.uint8)
                    image[0, 0] = (severity * 40, k * 100, j * 100)
                    Image.fromarray(image).save(folder / f"ILSVRC2012_val_{k}{j:07d}.png")
    return root


@pytest.mark.parametrize("families", [False, True])
def test_imagenet_c_tree(tmp_path, families):
    root = make_imagenet_c(tmp_path, families=families)
    assert c_datasets.imagenet_c_corruptions(root) == ["gaussian_noise", "fog"]
    data = c_datasets.load_imagenet_c(root, "fog", 3)
    assert data.images.shape == (4, 24, 24, 3) and data.images.dtype == np.uint8
    np.testing.assert_array_equal(data.labels, [0, 0, 1, 1])
    np.testing.assert_array_equal(data.images[:, 0, 0, 0], [120] * 4)  # severity 3
    np.testing.assert_array_equal(data.images[:, 0, 0, 1], [0, 0, 100, 100])
    assert data.class_names == ["n01440764", "n01443537"]
    # A class index for a partial tree (here: Keras's ImageNet order of these two wnids).
    files, labels = c_datasets.list_imagenet_c(root, "fog", 1, {"n01440764": 0, "n01443537": 1,
                                                                 "n99999999": 7})
    assert len(files) == 4 and labels.tolist() == [0, 0, 1, 1]
    files, labels = c_datasets.list_imagenet_c(root, "fog", 1, {"n01440764": 5, "n01443537": 9})
    assert labels.tolist() == [5, 5, 9, 9]
    few = c_datasets.load_imagenet_c(root, "gaussian_noise", 5, limit=3, every=1, size=16)
    assert few.images.shape == (3, 16, 16, 3)
    assert c_datasets.load_imagenet_c(root, "fog", 2, every=2).labels.tolist() == [0, 1]


def test_imagenet_c_errors(tmp_path):
    root = make_imagenet_c(tmp_path, corruptions=("fog",))
    with pytest.raises(ValueError, match=r"one of the corruptions found .*\['fog'\]"):
        c_datasets.load_imagenet_c(root, "snow", 1)
    with pytest.raises(ValueError, match="severity must be an integer in 1..5"):
        c_datasets.load_imagenet_c(root, "fog", 6)
    with pytest.raises(ValueError, match="class_index has no label"):
        c_datasets.list_imagenet_c(root, "fog", 1, {"n01440764": 0})
    with pytest.raises(ValueError, match="root must be an existing folder"):
        c_datasets.imagenet_c_corruptions(tmp_path / "nowhere")
    import shutil

    shutil.rmtree(root / "fog" / "4")
    with pytest.raises(ValueError, match="severity 4 of 'fog' is missing"):
        c_datasets.load_imagenet_c(root, "fog", 4)


def make_cifar_c(root, n=4, corruptions=("gaussian_noise", "speckle_noise")):
    labels = np.tile(np.arange(n) % 10, 5).astype(np.uint8)
    np.save(root / "labels.npy", labels)
    for i, corruption in enumerate(corruptions):
        images = np.zeros([5 * n, 32, 32, 3], np.uint8)
        for s in range(5):
            images[s * n : (s + 1) * n] = 10 * i + s + 1  # the severity in every pixel
        np.save(root / f"{corruption}.npy", images)
    return root


def test_cifar_c_files(tmp_path):
    root = make_cifar_c(tmp_path)
    assert c_datasets.cifar_c_corruptions(root) == ["gaussian_noise", "speckle_noise"]
    for severity in (1, 3, 5):
        x, y = c_datasets.load_cifar_c(root, "speckle_noise", severity)
        assert x.shape == (4, 32, 32, 3) and x.dtype == np.uint8 and y.dtype == np.int64
        assert np.all(x == 10 + severity)
        assert y.tolist() == [0, 1, 2, 3]
    x, y = c_datasets.load_cifar_c(root, "gaussian_noise", 2, limit=3)
    assert x.shape[0] == 3 and np.all(x == 2)


def test_cifar_c_errors(tmp_path):
    root = make_cifar_c(tmp_path)
    with pytest.raises(ValueError, match="one of the .npy files"):
        c_datasets.load_cifar_c(root, "fog", 1)
    with pytest.raises(ValueError, match="severity must be an integer in 1..5"):
        c_datasets.load_cifar_c(root, "gaussian_noise", 0)
    np.save(root / "fog.npy", np.zeros([7, 32, 32, 3], np.uint8))
    with pytest.raises(ValueError, match="five severities"):
        c_datasets.load_cifar_c(root, "fog", 1)
    np.save(root / "snow.npy", np.zeros([10, 32, 32, 3], np.uint8))
    with pytest.raises(ValueError, match="one label per image"):
        c_datasets.load_cifar_c(root, "snow", 1)
    np.save(root / "frost.npy", np.array([{"a": 1}] * 5, dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="pickled arrays are refused"):
        c_datasets.load_cifar_c(root, "frost", 1)
    (root / "labels.npy").unlink()
    with pytest.raises(ValueError, match="labels.npy is missing"):
        c_datasets.load_cifar_c(root, "gaussian_noise", 1)
