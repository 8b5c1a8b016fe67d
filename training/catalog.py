"""The catalogue of model variants: each is one declaration naming a builder and its arguments.

Two families:

* the *seed* models, the classic Keras MNIST convnet (``original``) and its "optimized" twin
  whose first convolution is depthwise and whose second uses a 7x7 kernel (``depthwise``);
* the *design-space* family, a small ``Conv2D(8) -> Conv2D(16) -> Dense(32)`` net varied one
  choice at a time (kernel sizes, strides, padding, pooling), as in the reference study.

Parameter and multiply-add counts are computed from the built layers, never typed in.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modelrepo.contract import CLASSES, INPUT_NAME, INPUT_SHAPE

if TYPE_CHECKING:
    import keras


def seed_convnet(first: str, second_kernel: int) -> keras.Sequential:
    """The keras-io MNIST convnet, with its first convolution ``conv`` or ``depthwise``."""
    import keras
    from keras import layers

    first_layer = (
        layers.Conv2D(32, kernel_size=(3, 3), activation="relu")
        if first == "conv"
        else layers.DepthwiseConv2D(kernel_size=(3, 3), activation="relu")
    )
    return keras.Sequential(
        [
            keras.Input(shape=INPUT_SHAPE, name=INPUT_NAME),
            first_layer,
            layers.Conv2D(64, kernel_size=(second_kernel, second_kernel), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Dropout(0.25),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dropout(0.5),
            layers.Dense(CLASSES, activation="softmax"),
        ]
    )


def small_convnet(
    k1: int = 3,
    k2: int = 3,
    strides: int = 1,
    padding: tuple[str, str] = ("valid", "valid"),
    pool: int | None = None,
) -> keras.Sequential:
    """The design-space net: Conv2D(8, k1) -> Conv2D(16, k2) -> Dense(32) -> Dense(10)."""
    import keras
    from keras import layers

    stack: list[Any] = [keras.Input(shape=INPUT_SHAPE, name=INPUT_NAME)]
    for filters, kernel, pad in ((8, k1, padding[0]), (16, k2, padding[1])):
        stack.append(
            layers.Conv2D(filters, kernel, strides=strides, padding=pad, activation="relu")
        )
        if pool:
            stack.append(layers.MaxPooling2D(pool_size=(pool, pool)))
    stack += [
        layers.Flatten(),
        layers.Dense(32, activation="relu"),
        layers.Dense(CLASSES, activation="softmax"),
    ]
    return keras.Sequential(stack)


@dataclass(frozen=True)
class Variant:
    """One catalogued model: a name, what it is, which reference it reproduces, how to build it."""

    name: str
    family: str
    description: str
    reference: str
    builder: Callable[[], keras.Sequential]

    def build(self) -> keras.Sequential:
        """A fresh, untrained model of this variant, named after it."""
        model = self.builder()
        model.name = self.name.replace("-", "_")
        return model


def _small(name: str, family: str, setting: str, **kwargs: Any) -> Variant:
    """A design-space entry: the small net with one choice (``family``) set to ``setting``."""
    builder = functools.partial(small_convnet, **kwargs)
    return Variant(
        name, family, f"small net, {family} {setting}", f"{STUDY}: {family} {setting}", builder
    )


SEED_REFERENCE = "keras-io mnist_convnet: Conv2D 3x3 (99.1% / loss 0.0352 after 12 epochs)"
STUDY = "design-space study, small net Conv2D(8)->Conv2D(16)->Dense(32)"

VARIANTS: tuple[Variant, ...] = (
    Variant(
        "original",
        "seed",
        "Classic Keras MNIST convnet: Conv2D(32,3x3) -> Conv2D(64,3x3) -> pool -> Dense(128)",
        SEED_REFERENCE + "; 1,199,882 parameters",
        functools.partial(seed_convnet, first="conv", second_kernel=3),
    ),
    Variant(
        "depthwise",
        "seed",
        "'Optimized' convnet: DepthwiseConv2D(3x3) -> Conv2D(64,7x7) -> pool -> Dense(128)",
        "depthwise variant: 823,828 parameters, 99.21% / loss 0.0252 after 12 epochs",
        functools.partial(seed_convnet, first="depthwise", second_kernel=7),
    ),
    # Kernel sizes k1/k2, stride 1, valid padding. k3-3 is also the study's valid/valid and
    # stride-1 baseline: the same net, so it is catalogued once.
    _small("small-k3-3", "kernels", "3/3 (= padding valid/valid)", k1=3, k2=3),
    _small("small-k3-5", "kernels", "3/5", k1=3, k2=5),
    _small("small-k5-5", "kernels", "5/5", k1=5, k2=5),
    _small("small-k7-3", "kernels", "7/3", k1=7, k2=3),
    _small("small-k7-9", "kernels", "7/9", k1=7, k2=9),
    _small("small-k9-9", "kernels", "9/9", k1=9, k2=9),
    _small("small-stride2", "strides", "2 on both 3x3 convs", strides=2),
    _small("small-stride3", "strides", "3 on both 3x3 convs", strides=3),
    _small("small-stride4", "strides", "4 on both 3x3 convs", strides=4),
    _small("small-stride5", "strides", "5 on both 3x3 convs", strides=5),
    _small("small-same-same", "padding", "same/same", padding=("same", "same")),
    _small("small-same-valid", "padding", "same/valid", padding=("same", "valid")),
    _small("small-pool2", "pooling", "2x2 after each 3x3 conv", pool=2),
    _small("small-pool3", "pooling", "3x3 after each 3x3 conv", pool=3),
    _small("small-pool4", "pooling", "4x4 after each 3x3 conv", pool=4),
)

SEED_VARIANTS = ("original", "depthwise")
_BY_NAME = {variant.name: variant for variant in VARIANTS}


def names() -> list[str]:
    """Every catalogued variant name, in catalogue order."""
    return [variant.name for variant in VARIANTS]


def get(name: str) -> Variant:
    """The variant called ``name``; KeyError listing the known names otherwise."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown variant {name!r}; known: {', '.join(names())}") from None


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates for one image, from each layer's built input and output shapes.

    Convolutions and dense layers only: pooling, activations and dropout do no
    multiply-adds worth counting next to them (the usual convention for FLOP tables).
    """
    from keras import layers

    total = 0
    for layer in model.layers:
        out_shape = layer.output.shape
        in_channels = layer.input.shape[-1]
        if isinstance(layer, layers.DepthwiseConv2D):
            kh, kw = layer.kernel_size
            total += out_shape[1] * out_shape[2] * out_shape[3] * kh * kw
        elif isinstance(layer, layers.Conv2D):
            kh, kw = layer.kernel_size
            total += out_shape[1] * out_shape[2] * out_shape[3] * kh * kw * in_channels
        elif isinstance(layer, layers.Dense):
            total += in_channels * layer.units
    return int(total)


def describe(variant: Variant) -> dict[str, Any]:
    """The catalogue entry as plain data: name, family, description, parameters, MACs, reference."""
    model = variant.build()
    return {
        "name": variant.name,
        "family": variant.family,
        "description": variant.description,
        "parameters": int(model.count_params()),
        "macs": count_macs(model),
        "reference": variant.reference,
    }
