"""Tests for deepcorrect.units: Table 10 parameter counts, identity at init."""

import keras
import numpy as np
import pytest

from deepcorrect.units import UNIT_PRESETS, CorrectionUnit


def built_unit(channels, preset="cw", kernel_size=3, **kwargs):
    unit = CorrectionUnit(channels, preset=preset, kernel_size=kernel_size, **kwargs)
    unit.build((None, 9, 9, channels))
    return unit


def trainable_count(layer):
    return sum(int(np.prod(w.shape)) for w in layer.trainable_weights)


# (corrected channels, preset, kernel size, trainable parameters), all from
# Table 10 of the paper (Deepcorr-5 units 1-5 and the lite/bottleneck rows).
TABLE_10 = [
    (72, "cw", 5, 270_288),
    (192, "cw", 3, 739_200),
    (128, "cw", 3, 328_960),
    (72, "lite", 5, 314_568),
    (192, "lite", 3, 345_408),
    (128, "lite", 3, 328_960),
    (72, "bottleneck", 5, 40_680),
    (192, "bottleneck", 3, 287_040),
    (128, "bottleneck", 3, 127_872),
]


@pytest.mark.parametrize("channels,preset,kernel_size,expected", TABLE_10)
def test_trainable_parameters_match_table_10(channels, preset, kernel_size, expected):
    assert trainable_count(built_unit(channels, preset, kernel_size)) == expected


def test_no_bn_drops_exactly_the_batch_norm_parameters():
    # Three BN layers of width 72, gamma and beta each: 3 * 2 * 72 = 432.
    unit = built_unit(72, "no_bn", 5)
    assert trainable_count(unit) == 270_288 - 432
    assert unit.non_trainable_weights == []
    assert not any(isinstance(l, keras.layers.BatchNormalization) for l in unit.stack)


def test_moving_statistics_are_not_trainable():
    unit = built_unit(72, "cw", 5)
    non_trainable = sum(int(np.prod(w.shape)) for w in unit.non_trainable_weights)
    assert non_trainable == 3 * 2 * 72  # moving mean and variance of 3 BNs


def test_lite_dilates_its_3x3_pair_in_place_of_a_larger_kernel():
    assert built_unit(72, "lite", 5).dilation_rates == (1, 2)
    assert built_unit(72, "lite", 3).dilation_rates == (1, 1)
    kernels = [l.kernel_size for l in built_unit(72, "lite", 5).stack
               if isinstance(l, keras.layers.Conv2D)]
    assert kernels == [(1, 1), (3, 3), (3, 3), (1, 1)]


def test_bottleneck_has_half_width_and_three_inner_convs():
    convs = [l for l in built_unit(72, "bottleneck").stack
             if isinstance(l, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [36, 36, 36, 36, 72]
    assert [c.kernel_size for c in convs[1:4]] == [(3, 3)] * 3


@pytest.mark.parametrize("preset", sorted(UNIT_PRESETS))
@pytest.mark.parametrize("training", [False, True])
def test_unit_is_the_identity_at_initialisation(preset, training):
    unit = built_unit(6, preset, 3)
    x = np.random.default_rng(0).normal(size=(2, 7, 7, 6)).astype("float32")
    np.testing.assert_array_equal(np.asarray(unit(x, training=training)), x)


def test_unit_changes_its_input_once_the_last_conv_is_nonzero():
    unit = built_unit(6, "cw", 3)
    last = unit.stack[-1]
    last.kernel.assign(np.full(last.kernel.shape, 0.1, "float32"))
    x = np.random.default_rng(0).normal(size=(1, 5, 5, 6)).astype("float32")
    assert np.abs(np.asarray(unit(x)) - x).max() > 1e-3


# Multiply-accumulates from Table 10 ("# FLOPs") on AlexNet's feature maps:
# conv1 55x55, conv2 27x27, conv3-4 13x13. The paper rounds to 3 digits.
@pytest.mark.parametrize(
    "channels,preset,kernel_size,size,paper_flops",
    [
        (72, "cw", 5, 55, 8.16e8),
        (192, "cw", 3, 27, 5.38e8),
        (192, "cw", 3, 13, 1.24e8),
        (72, "lite", 5, 55, 9.49e8),
        (72, "bottleneck", 5, 55, 1.22e8),
        (192, "bottleneck", 3, 13, 4.83e7),
    ],
)
def test_multiply_adds_match_table_10_flops(channels, preset, kernel_size, size, paper_flops):
    flops = built_unit(channels, preset, kernel_size).multiply_adds(size, size)
    assert flops == pytest.approx(paper_flops, rel=5e-3)


def test_config_round_trip_rebuilds_the_same_unit():
    unit = built_unit(10, "lite", 5, kernel_regularizer=keras.regularizers.L1(1e-5))
    clone = CorrectionUnit.from_config(unit.get_config())
    clone.build((None, 9, 9, 10))
    clone.set_weights(unit.get_weights())
    assert clone.dilation_rates == unit.dilation_rates
    assert trainable_count(clone) == trainable_count(unit)
    x = np.random.default_rng(1).normal(size=(1, 9, 9, 10)).astype("float32")
    np.testing.assert_array_equal(np.asarray(clone(x)), np.asarray(unit(x)))


def test_overrides_of_width_and_dilations():
    unit = built_unit(8, "cw", 3, width=4, dilation_rates=(2, 3))
    convs = [l for l in unit.stack if isinstance(l, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [4, 4, 4, 8]
    assert [c.dilation_rate for c in convs[1:3]] == [(2, 2), (3, 3)]


def test_unknown_preset_names_the_allowed_values():
    with pytest.raises(ValueError, match=r"preset must be one of .*'bottleneck'.*'cw'"):
        CorrectionUnit(8, preset="wide")


def test_wrong_dilation_count_and_bad_sizes_raise():
    with pytest.raises(ValueError, match="dilation_rates must have 3 entries"):
        CorrectionUnit(8, preset="bottleneck", dilation_rates=(1, 2))
    with pytest.raises(ValueError, match="channels must be a positive integer"):
        CorrectionUnit(0)
    with pytest.raises(ValueError, match="kernel_size must be a positive integer"):
        CorrectionUnit(8, kernel_size=0)


def test_input_channel_mismatch_raises():
    with pytest.raises(ValueError, match="needs inputs with 8 channels"):
        CorrectionUnit(8).build((None, 4, 4, 5))


def test_fused_unit_matches_the_plain_unit_on_the_gathered_channels():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 7, 7, 10)).astype("float32")
    indices = [7, 2, 5, 0]
    fused = CorrectionUnit(4, "lite", 5, channel_indices=indices)
    fused.build(x.shape)
    plain = built_unit(4, "lite", 5)
    assert trainable_count(fused) == trainable_count(plain)
    for weight in fused.trainable_weights:
        weight.assign(rng.normal(0, 0.3, weight.shape).astype("float32"))
    plain.set_weights(fused.get_weights())
    out = np.asarray(fused(x))
    np.testing.assert_allclose(out[..., indices], np.asarray(plain(x[..., indices])),
                               atol=1e-5)
    others = [c for c in range(10) if c not in indices]
    np.testing.assert_array_equal(out[..., others], x[..., others])
    clone = CorrectionUnit.from_config(fused.get_config())
    clone.build(x.shape)
    clone.set_weights(fused.get_weights())
    np.testing.assert_array_equal(np.asarray(clone(x)), out)


def test_fused_unit_validates_its_indices():
    with pytest.raises(ValueError, match="channel_indices must hold channels=3"):
        CorrectionUnit(3, channel_indices=[0, 1])
    with pytest.raises(ValueError, match=r"channel_indices must hold integers in \[0, 4\)"):
        CorrectionUnit(2, channel_indices=[0, 9]).build((None, 5, 5, 4))
