"""The two architectures written once, framework-free: layer list, parameter names and shapes
(Keras layout), FLOPs. Both backends build their models from this list, so a parameter count or
a layer order cannot drift between them; `data.weights` draws the shared initial weights from it.

    mlp: Flatten -> Dense w0 relu -> Dense w1 relu -> Dense classes (logits)        widths (256, 128)
    cnn: Conv w0 3x3 same relu -> MaxPool 2 -> Conv w1 3x3 same relu -> MaxPool 2
         -> Flatten (NHWC order) -> Dense w2 relu -> Dense classes (logits)        widths (32, 64, 128)

    dropout > 0 (off by default): a Dropout(rate) after every hidden Dense layer (inverted dropout,
    rate = the share of units dropped in training, as keras.layers.Dropout and nn.Dropout define it).
"""
from __future__ import annotations

from dataclasses import dataclass

DEFAULT_WIDTHS = {"mlp": (256, 128), "cnn": (32, 64, 128)}
KERNEL = 3  # conv kernel size (odd, stride 1: 'same' padding is symmetric k // 2 on both sides)
POOL = 2  # max-pool window and stride ('valid': odd sizes floor, as in Keras and torch)


@dataclass(frozen=True)
class Layer:
    name: str  # neutral name: conv_0, dense_0, ... (parameters are "<name>/kernel", "<name>/bias")
    kind: str  # "conv", "pool", "flatten", "dense", "dropout"
    units: int = 0  # output channels (conv) or units (dense)
    fan_in: int = 0  # input channels (conv) or input features (dense)
    relu: bool = False
    out_hw: tuple = ()  # spatial size after the layer (conv, pool), for FLOPs
    rate: float = 0.0  # dropout: share of units dropped in training

    @property
    def kernel_shape(self) -> tuple:  # Keras layout: conv HWIO, dense (in, out)
        return (KERNEL, KERNEL, self.fan_in, self.units) if self.kind == "conv" else (self.fan_in, self.units)


MODELS = ("mlp", "cnn")


def build_layers(model: str, input_shape: tuple, num_classes: int, widths: tuple | None = None,
                 dropout: float = 0.0) -> list:
    """The layer list for `model` on images of `input_shape` (H, W, C) with `num_classes` outputs."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose from {', '.join(MODELS)}")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout rate must be in [0, 1), got {dropout}")
    widths = tuple(widths or DEFAULT_WIDTHS[model])
    h, w, c = input_shape
    layers = []
    if model == "mlp":
        if len(widths) < 1:
            raise ValueError("mlp needs at least one hidden width")
        layers.append(Layer("flatten", "flatten"))
        fan_in = h * w * c
        dense_widths = widths
    else:
        if len(widths) < 2:
            raise ValueError("cnn widths are conv filters then the dense width, e.g. 32,64,128")
        for i, filters in enumerate(widths[:-1]):
            layers.append(Layer(f"conv_{i}", "conv", filters, c, True, (h, w)))
            h, w, c = h // POOL, w // POOL, filters
            if h == 0 or w == 0:
                raise ValueError(f"too many conv/pool stages for input {input_shape}")
            layers.append(Layer(f"pool_{i}", "pool", out_hw=(h, w)))
        layers.append(Layer("flatten", "flatten"))
        fan_in = h * w * c
        dense_widths = widths[-1:]
    for i, units in enumerate(dense_widths):
        layers.append(Layer(f"dense_{i}", "dense", units, fan_in, True))
        if dropout:
            layers.append(Layer(f"dropout_{i}", "dropout", rate=dropout))
        fan_in = units
    layers.append(Layer(f"dense_{len(dense_widths)}", "dense", num_classes, fan_in, False))
    return layers


def param_shapes(layers: list) -> dict:
    """{'conv_0/kernel': (3, 3, 1, 32), 'conv_0/bias': (32,), ...} in layer order, Keras layout."""
    out = {}
    for layer in layers:
        if layer.kind in ("conv", "dense"):
            out[f"{layer.name}/kernel"] = layer.kernel_shape
            out[f"{layer.name}/bias"] = (layer.units,)
    return out


def count_params(layers: list) -> int:
    total = 0
    for shape in param_shapes(layers).values():
        n = 1
        for d in shape:
            n *= d
        total += n
    return total


def forward_flops(layers: list) -> int:
    """Multiply-adds x 2 of one forward pass for one sample (convs and dense layers; pools and ReLU ignored)."""
    flops = 0
    for layer in layers:
        if layer.kind == "conv":
            flops += 2 * layer.out_hw[0] * layer.out_hw[1] * KERNEL * KERNEL * layer.fan_in * layer.units
        elif layer.kind == "dense":
            flops += 2 * layer.fan_in * layer.units
    return flops


def train_flops(layers: list) -> int:
    """FLOPs of one training step per sample: forward + backward ~ 3x forward (the usual estimate)."""
    return 3 * forward_flops(layers)


def activation_floor(layers: list, input_shape: tuple) -> tuple:
    """Float32 values per sample that must be in memory at once, at the least, as (training, inference).

    Inference: the largest layer's input and output together (a layer reads one while it writes the other).
    Training: at some layer, its input and output plus the input of every conv and dense layer before it,
    which the backward pass needs for the weight gradients (neither framework recomputes them). A floor,
    not an estimate: the frameworks keep more (pool inputs, ReLU outputs, dropout masks, workspaces)."""
    h, w, c = input_shape
    kept = train = infer = 0
    for layer in layers:
        size = h * w * c  # the layer's input (Flatten is a view: it changes the shape, not the count)
        if layer.kind == "conv":  # 'same' padding, stride 1: the input's spatial size
            c = layer.units
        elif layer.kind == "pool":
            h, w = layer.out_hw
        elif layer.kind == "dense":
            h, w, c = 1, 1, layer.units
        elif layer.kind != "dropout":  # flatten
            continue
        out = h * w * c
        infer = max(infer, size + out)
        train = max(train, kept + size + out)
        if layer.kind in ("conv", "dense"):
            kept += size
    return train, infer
