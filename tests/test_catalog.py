"""The catalogue reproduces the reference architectures exactly."""

import pytest

from training import catalog

# The reference figures (issue 2): parameters of every catalogued architecture.
REFERENCE_PARAMETERS = {
    "original": 1_199_882,
    "depthwise": 823_828,
    "small-k3-3": 296_522,  # also the study's valid/valid padding and stride-1 net
    "small-k3-5": 251_466,
    "small-k5-5": 208_586,
    "small-k7-3": 206_730,
    "small-k7-9": 111_498,
    "small-k9-9": 85_130,
    "small-stride2": 20_042,
    "small-stride3": 6_218,
    "small-stride4": 3_658,
    "small-stride5": 2_122,
    "small-same-same": 403_018,
    "small-same-valid": 347_722,
    "small-pool2": 14_410,
    "small-pool3": 3_658,
    "small-pool4": 2_122,
}


def test_catalog_holds_exactly_the_reference_variants() -> None:
    assert sorted(catalog.names()) == sorted(REFERENCE_PARAMETERS)


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMETERS))
def test_parameter_count_matches_reference(name: str) -> None:
    assert catalog.describe(catalog.get(name))["parameters"] == REFERENCE_PARAMETERS[name]


def test_macs_follow_the_layer_shapes() -> None:
    # original: conv 26*26*32*9 + conv 24*24*64*(9*32) + dense 9216*128 + dense 128*10
    assert catalog.describe(catalog.get("original"))["macs"] == (
        26 * 26 * 32 * 9 + 24 * 24 * 64 * 288 + 9216 * 128 + 1280
    )
    # depthwise: 26*26*1*9 + 20*20*64*49 + 6400*128 + 1280, 5.76x fewer than original
    depthwise = catalog.describe(catalog.get("depthwise"))["macs"]
    assert depthwise == 26 * 26 * 9 + 20 * 20 * 64 * 49 + 6400 * 128 + 1280
    original = catalog.describe(catalog.get("original"))["macs"]
    assert round(original / depthwise, 2) == 5.76


def test_seed_models_have_the_documented_layers() -> None:
    model = catalog.get("depthwise").build()
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == [
        "DepthwiseConv2D",
        "Conv2D",
        "MaxPooling2D",
        "Dropout",
        "Flatten",
        "Dense",
        "Dropout",
        "Dense",
    ]
    assert model.layers[1].kernel_size == (7, 7)


def test_unknown_variant_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="original"):
        catalog.get("resnet")
