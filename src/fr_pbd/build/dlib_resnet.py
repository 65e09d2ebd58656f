"""Convert dlib's face descriptor network (``dlib_face_recognition_resnet_model_v1.dat``) to ONNX.

fr-pbd parses dlib's serialisation format itself instead of asking dlib for the
weights, so the conversion is auditable line by line (the byte layout is in
``docs/dlib-format.md``) and needs only numpy and, to write the graph, ``onnx``.
dlib is used only by the tests, as the oracle.

The ``.dat`` file does not name its layers' wrapper types (tags, skips, which tag
an ``add_prev`` adds): those are C++ template parameters. The architecture is
therefore written down here (``_anet_spec``, a transcription of ``anet_type`` in
dlib's ``examples/dnn_face_recognition_ex.cpp``) and every field of the file is
checked against it while parsing.

The ONNX output is deterministic: fixed IR version and opset, fixed producer, no
timestamps, initialisers in a fixed order. Building twice gives the same bytes,
so the sha256 can be pinned in the manifest like any downloaded model.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fr_pbd.errors import ModelBuildError

log = logging.getLogger(__name__)

DAT_NAME = "dlib_face_recognition_resnet_model_v1.dat"
MODEL_ID = "dlib-resnet-v1"
INPUT_NAME = "input"
OUTPUT_NAME = "embedding"
INPUT_SIZE = 150
EMBEDDING_DIM = 128

# Pinned so the bytes do not depend on the installed onnx package version.
# IR 7 is the IR version that introduced opset 13; both are read by every
# onnxruntime since 1.6 and by OpenCV's DNN module.
ONNX_IR_VERSION = 7
ONNX_OPSET = 13
PRODUCER_NAME = "fr-pbd"
PRODUCER_VERSION = "build_dlib/1"

_INSTALL_HINT = "pip install face_recognition_models"


# --------------------------------------------------------------------------- reader
class _FormatError(Exception):
    """Internal: the bytes do not follow the expected layout."""


class _Reader:
    """Bounds-checked cursor over the ``.dat`` bytes (dlib/serialize.h encodings)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise _FormatError(f"file ends at byte {len(self.data)}, wanted {n} more byte(s) at byte {self.pos}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def int_(self, nbytes: int = 8, signed: bool = True) -> int:
        """dlib's integer: control byte (bit 7 = sign, low 4 bits = length), then LE magnitude."""
        at = self.pos
        ctrl = self._take(1)[0]
        if signed:
            negative = bool(ctrl & 0x80)
            size = ctrl & 0x0F
        else:  # dlib's unpack_int for unsigned types masks with 0x8F: a sign bit makes size > 8
            negative = False
            size = ctrl & 0x8F
        if size > nbytes:
            raise _FormatError(f"integer of {size} bytes at byte {at} does not fit {nbytes} bytes")
        value = int.from_bytes(self._take(size), "little") if size else 0
        return -value if negative else value

    def uint(self, nbytes: int = 8) -> int:
        return self.int_(nbytes, signed=False)

    def bool_(self) -> bool:
        at = self.pos
        ch = self._take(1)
        if ch == b"1":
            return True
        if ch == b"0":
            return False
        raise _FormatError(f"bad bool byte {ch!r} at byte {at}")

    def string(self) -> str:
        n = self.uint(8)
        if n > len(self.data) - self.pos:
            raise _FormatError(f"string length {n} runs past the end of the file")
        raw = self._take(n)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise _FormatError(f"non-ASCII string at byte {self.pos - n}") from None

    def float_(self) -> float:
        """float_details: int64 mantissa then int16 exponent; value = mantissa * 2**exponent."""
        at = self.pos
        if at >= len(self.data):
            raise _FormatError(f"file ends at byte {at}, wanted a float")
        if self.data[at] & 0x70:
            # dlib's pre-2013 ASCII float format; never used by DNN files.
            raise _FormatError(f"old ASCII float encoding at byte {at} is not supported")
        mantissa = self.int_(8)
        exponent = self.int_(2)
        if exponent == 32000:
            return float("inf")
        if exponent == 32001:
            return float("-inf")
        if exponent >= 32002:
            return float("nan")
        return float(np.ldexp(np.float64(mantissa), exponent))

    def tensor(self) -> np.ndarray:
        """resizable_tensor: version 2, n, k, nr, nc, then n*k*nr*nc little-endian float32."""
        at = self.pos
        version = self.int_(4)
        if version != 2:
            raise _FormatError(f"tensor version {version} at byte {at} (expected 2)")
        dims = tuple(self.int_(8) for _ in range(4))
        if min(dims) < 0:
            raise _FormatError(f"negative tensor dimension at byte {at}")
        count = int(np.prod(dims, dtype=np.int64))
        if count * 4 > len(self.data) - self.pos:
            raise _FormatError(f"tensor of {count} floats at byte {at} runs past the end of the file")
        # Tensor data is raw IEEE float32, so it is read in one vectorised call.
        arr = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos).reshape(dims)
        self.pos += count * 4
        return arr.astype(np.float32)  # native byte order, own memory

    def alias_tensor(self) -> tuple[int, int, int, int]:
        """alias_tensor: version 1, n, k, nr, nc (a view shape into a layer's params)."""
        at = self.pos
        version = self.int_(4)
        if version != 1:
            raise _FormatError(f"alias_tensor version {version} at byte {at} (expected 1)")
        dims = tuple(self.int_(8) for _ in range(4))
        if min(dims) < 0:
            raise _FormatError(f"negative alias_tensor dimension at byte {at}")
        return dims  # type: ignore[return-value]

    def expect_string(self, *allowed: str) -> str:
        at = self.pos
        s = self.string()
        if s not in allowed:
            raise _FormatError(f"found {s!r} at byte {at}, expected {' or '.join(map(repr, allowed))}")
        return s


# --------------------------------------------------------------------------- parsed layers
@dataclass
class Conv:
    num_filters: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    weight: np.ndarray  # (out, in, kh, kw), float32
    bias: np.ndarray  # (out,)


@dataclass
class Affine:
    gamma: np.ndarray  # (k,) in CONV_MODE, (k, nr, nc) in FC_MODE
    beta: np.ndarray
    conv_mode: bool


@dataclass
class Pool:
    kind: str  # "max" or "avg"
    kernel: tuple[int, int]  # (0, 0) = the whole input ("..._everything")
    stride: tuple[int, int]
    padding: tuple[int, int]


@dataclass
class Fc:
    num_outputs: int
    num_inputs: int
    weight: np.ndarray  # (num_inputs, num_outputs): dlib computes x @ W
    bias: np.ndarray | None


@dataclass
class Relu:
    pass


@dataclass
class Tag:
    id: int


@dataclass
class Skip:
    id: int


@dataclass
class AddPrev:
    id: int


Layer = Conv | Affine | Pool | Fc | Relu | Tag | Skip | AddPrev


@dataclass
class DlibNet:
    """The parsed network, layers in forward order (input side first)."""

    mean_rgb: tuple[float, float, float]
    input_size: tuple[int, int]
    layers: list[Layer]
    loss: dict[str, float]
    n_weights: int
    parse_seconds: float = 0.0
    source_sha256: str = ""


# --------------------------------------------------------------------------- architecture
def _anet_spec() -> list[tuple[Any, ...]]:
    """``anet_type`` of dlib's dnn_face_recognition_ex.cpp, in forward order.

    Entries: ("con", filters, k, stride), ("affine",), ("relu",),
    ("max_pool", k, stride), ("avg_pool", k, stride) (k=0: whole input),
    ("tag", id), ("skip", id), ("add_prev", id), ("fc", outputs).
    """

    def block(n: int, stride: int) -> list[tuple[Any, ...]]:
        # block<N,BN,stride,S> = BN<con<N,3,3,1,1,relu<BN<con<N,3,3,stride,stride,S>>>>>
        return [("con", n, 3, stride), ("affine",), ("relu",), ("con", n, 3, 1), ("affine",)]

    def ares(n: int) -> list[tuple[Any, ...]]:
        # relu<add_prev1<block<N,affine,1,tag1<S>>>>
        return [("tag", 1), *block(n, 1), ("add_prev", 1), ("relu",)]

    def ares_down(n: int) -> list[tuple[Any, ...]]:
        # relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,affine,2,tag1<S>>>>>>>
        return [("tag", 1), *block(n, 2), ("tag", 2), ("skip", 1), ("avg_pool", 2, 2),
                ("add_prev", 2), ("relu",)]

    spec: list[tuple[Any, ...]] = [("con", 32, 7, 2), ("affine",), ("relu",), ("max_pool", 3, 2)]
    spec += ares(32) * 3                      # alevel4
    spec += ares_down(64) + ares(64) * 3      # alevel3
    spec += ares_down(128) + ares(128) * 2    # alevel2
    spec += ares_down(256) + ares(256) * 2    # alevel1
    spec += ares_down(256)                    # alevel0
    spec += [("avg_pool", 0, 1), ("fc", 128)]  # avg_pool_everything, fc_no_bias<128>
    return spec


_COMPUTATIONAL = {"con", "affine", "relu", "max_pool", "avg_pool", "add_prev", "fc"}


def _default_padding(k: int, stride: int) -> int:
    # con_/max_pool_/avg_pool_ template default: _stride!=1 ? 0 : _nr/2
    return 0 if stride != 1 else k // 2


# --------------------------------------------------------------------------- layer details
def _read_multipliers(r: _Reader) -> None:
    for _ in range(4):  # learning-rate / weight-decay multipliers: training only
        r.float_()


def _parse_con(r: _Reader, spec: tuple[Any, ...]) -> Conv:
    _, n_filters, k, stride = spec
    at = r.pos
    r.expect_string("con_4", "con_5")
    params = r.tensor()
    num_filters = r.int_(8)
    nr, nc = r.int_(8), r.int_(8)
    sy, sx = r.int_(4), r.int_(4)
    py, px = r.int_(4), r.int_(4)
    fshape = r.alias_tensor()
    bshape = r.alias_tensor()
    _read_multipliers(r)
    if (num_filters, nr, nc, sy, sx) != (n_filters, k, k, stride, stride):
        raise _FormatError(f"con_ at byte {at} is {num_filters} filters {nr}x{nc}/{sy}x{sx}, "
                           f"expected {n_filters} filters {k}x{k}/{stride}")
    if (py, px) != (_default_padding(k, stride),) * 2:
        raise _FormatError(f"con_ at byte {at} has padding {py},{px}, not dlib's default")
    fsize = int(np.prod(fshape))
    if fshape[0] != num_filters or fshape[2:] != (nr, nc) or bshape != (1, num_filters, 1, 1) \
            or params.size != fsize + num_filters:
        raise _FormatError(f"con_ at byte {at}: parameter shapes do not agree")
    flat = params.reshape(-1)
    return Conv(num_filters, (nr, nc), (sy, sx), (py, px),
                weight=flat[:fsize].reshape(fshape).copy(), bias=flat[fsize:].copy())


def _parse_affine(r: _Reader) -> Affine:
    at = r.pos
    r.expect_string("affine_")
    params = r.tensor().reshape(-1)
    gshape = r.alias_tensor()
    bshape = r.alias_tensor()
    mode = r.int_(4)
    gsize = int(np.prod(gshape))
    if gshape != bshape or params.size != 2 * gsize or mode not in (0, 1):
        raise _FormatError(f"affine_ at byte {at}: parameter shapes do not agree")
    conv_mode = mode == 0  # dlib layer_mode: CONV_MODE = 0, FC_MODE = 1
    shape = (gshape[1],) if conv_mode else gshape[1:]
    if conv_mode and gshape[2:] != (1, 1):
        raise _FormatError(f"affine_ at byte {at}: CONV_MODE with per-pixel parameters")
    return Affine(gamma=params[:gsize].reshape(shape).copy(),
                  beta=params[gsize:].reshape(shape).copy(), conv_mode=conv_mode)


def _parse_pool(r: _Reader, spec: tuple[Any, ...]) -> Pool:
    kind, k, stride = spec
    name = "max_pool_2" if kind == "max_pool" else "avg_pool_2"
    at = r.pos
    r.expect_string(name)
    nr, nc = r.int_(8), r.int_(8)
    sy, sx = r.int_(4), r.int_(4)
    py, px = r.int_(4), r.int_(4)
    if (nr, nc, sy, sx) != (k, k, stride, stride) or (py, px) != (_default_padding(k, stride),) * 2:
        raise _FormatError(f"{name} at byte {at} is {nr}x{nc}/{sy}x{sx} pad {py},{px}, "
                           f"expected {k}x{k}/{stride}")
    return Pool("max" if kind == "max_pool" else "avg", (nr, nc), (sy, sx), (py, px))


def _parse_fc(r: _Reader, spec: tuple[Any, ...]) -> Fc:
    at = r.pos
    r.expect_string("fc_2")
    num_outputs = r.uint(8)
    num_inputs = r.uint(8)
    params = r.tensor().reshape(-1)
    wshape = r.alias_tensor()
    bshape = r.alias_tensor()
    bias_mode = r.int_(4)  # fc_bias_mode: FC_HAS_BIAS = 0, FC_NO_BIAS = 1
    _read_multipliers(r)
    wsize = num_inputs * num_outputs
    if num_outputs != spec[1] or wshape != (num_inputs, num_outputs, 1, 1) or bias_mode not in (0, 1):
        raise _FormatError(f"fc_ at byte {at}: unexpected shape or bias mode")
    if bias_mode == 0:
        if bshape != (1, num_outputs, 1, 1) or params.size != wsize + num_outputs:
            raise _FormatError(f"fc_ at byte {at}: parameter shapes do not agree")
        bias: np.ndarray | None = params[wsize:].copy()
    else:
        if params.size != wsize:
            raise _FormatError(f"fc_ at byte {at}: parameter shapes do not agree")
        bias = None
    return Fc(num_outputs, num_inputs, params[:wsize].reshape(num_inputs, num_outputs).copy(), bias)


def _parse_details(r: _Reader, spec: tuple[Any, ...]) -> Layer:
    kind = spec[0]
    if kind == "con":
        return _parse_con(r, spec)
    if kind == "affine":
        return _parse_affine(r)
    if kind == "relu":
        r.expect_string("relu_")
        return Relu()
    if kind in ("max_pool", "avg_pool"):
        return _parse_pool(r, spec)
    if kind == "add_prev":
        r.expect_string("add_prev_")
        return AddPrev(spec[1])
    if kind == "fc":
        return _parse_fc(r, spec)
    raise AssertionError(kind)


def _parse_add_layer_state(r: _Reader, version: int, innermost: bool) -> None:
    """The training state add_layer stores after its details; inference ignores it."""
    r.bool_()  # this_layer_setup_called
    r.bool_()  # gradient_input_is_stale
    r.bool_()  # get_output_and_gradient_input_disabled
    r.tensor()  # x_grad
    r.tensor()  # cached_output
    if innermost:
        r.tensor()  # grad_final
        if version >= 3:
            r.uint(4)  # _sample_expansion_factor
    elif version == 2:
        r.tensor()  # params_grad


def _parse_input(r: _Reader) -> tuple[tuple[float, float, float], tuple[int, int]]:
    at = r.pos
    r.expect_string("input_rgb_image_sized")
    mean = (r.float_(), r.float_(), r.float_())
    nr, nc = r.uint(8), r.uint(8)
    if (nr, nc) != (INPUT_SIZE, INPUT_SIZE):
        raise _FormatError(f"input layer at byte {at} is {nr}x{nc}, expected {INPUT_SIZE}x{INPUT_SIZE}")
    return mean, (nr, nc)


def _parse_bytes(data: bytes) -> DlibNet:
    r = _Reader(data)
    spec = _anet_spec()

    # add_loss_layer: version 1, loss details, then the network.
    if r.int_(4) != 1:
        raise _FormatError("not a dlib add_loss_layer (version != 1 at byte 0)")
    r.expect_string("loss_metric_2")
    loss = {"margin": r.float_(), "distance_threshold": r.float_()}

    # Each wrapper writes its version, then its subnetwork, then its own details:
    # so the versions of all wrappers come first, outermost (the fc) first.
    versions: list[int] = []
    for item in reversed(spec[1:]):
        at = r.pos
        v = r.int_(4)
        ok = (1 <= v <= 2) if item[0] in _COMPUTATIONAL else v == 1
        if not ok:
            raise _FormatError(f"unexpected version {v} for {item[0]} wrapper at byte {at}")
        versions.append(v)
    versions.reverse()

    # Innermost add_layer: the one whose subnetwork is the input layer.
    at = r.pos
    v0 = r.int_(4)
    if v0 not in (2, 3):
        raise _FormatError(f"unexpected version {v0} for the first layer at byte {at}")
    mean, size = _parse_input(r)
    layers: list[Layer] = [_parse_details(r, spec[0])]
    _parse_add_layer_state(r, v0, innermost=True)

    # Then, walking back out, each wrapper's details (forward order).
    for item, v in zip(spec[1:], versions):
        if item[0] == "tag":
            layers.append(Tag(item[1]))
        elif item[0] == "skip":
            layers.append(Skip(item[1]))
        else:
            layers.append(_parse_details(r, item))
            _parse_add_layer_state(r, v, innermost=False)

    if r.pos != len(data):
        raise _FormatError(f"{len(data) - r.pos} unexpected bytes after the network")

    n_weights = sum(
        (l.weight.size + l.bias.size) if isinstance(l, Conv)
        else (l.gamma.size + l.beta.size) if isinstance(l, Affine)
        else (l.weight.size + (0 if l.bias is None else l.bias.size)) if isinstance(l, Fc)
        else 0
        for l in layers
    )
    return DlibNet(mean_rgb=mean, input_size=size, layers=layers, loss=loss, n_weights=n_weights)


def default_dat_path() -> Path:
    """The .dat shipped inside the ``face_recognition_models`` package."""
    try:
        from importlib import resources

        root = resources.files("face_recognition_models")
    except ModuleNotFoundError:
        raise ModelBuildError(
            f"{DAT_NAME} not found: the Python package face_recognition_models is not installed "
            f"(install it with `{_INSTALL_HINT}`, or pass the .dat path)"
        ) from None
    path = Path(str(root)) / "models" / DAT_NAME
    if not path.is_file():
        raise ModelBuildError(
            f"{DAT_NAME} not found in {path.parent} (reinstall it with `{_INSTALL_HINT}`, "
            "or pass the .dat path)"
        )
    return path


def parse_dlib_dat(dat_path: Path) -> DlibNet:
    """Read and parse a ``dlib_face_recognition_resnet_model_v1.dat`` file."""
    dat_path = Path(dat_path)
    try:
        data = dat_path.read_bytes()
    except OSError as e:
        raise ModelBuildError(f"cannot read {dat_path}: {e.strerror or e}") from None
    t0 = time.perf_counter()
    try:
        net = _parse_bytes(data)
    except _FormatError as e:
        raise ModelBuildError(
            f"{dat_path.name} is not a valid dlib face descriptor model (truncated or corrupt?): {e}"
        ) from None
    except (ValueError, IndexError, OverflowError, MemoryError) as e:  # defence in depth
        raise ModelBuildError(
            f"{dat_path.name} is not a valid dlib face descriptor model ({type(e).__name__})"
        ) from None
    net.parse_seconds = time.perf_counter() - t0
    net.source_sha256 = hashlib.sha256(data).hexdigest()
    log.info("parsed %d weights from %s in %.3f s", net.n_weights, dat_path.name, net.parse_seconds)
    return net


# --------------------------------------------------------------------------- ONNX
class _GraphBuilder:
    """Accumulates nodes and initialisers with deterministic names, tracking (C, H, W)."""

    def __init__(self, onnx_mod: Any) -> None:
        self.onnx = onnx_mod
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.shapes: dict[str, tuple[int, int, int]] = {}
        self.counter = 0

    def name(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}_{self.counter}"

    def const(self, name: str, arr: np.ndarray) -> str:
        self.inits.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def node(self, op: str, inputs: list[str], shape: tuple[int, int, int] | None,
             out: str | None = None, **attrs: Any) -> str:
        n = self.name(op.lower())
        out = out or n
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [out], name=n, **attrs))
        if shape is not None:
            self.shapes[out] = shape
        return out


def _out_size(size: int, k: int, stride: int, pad: int) -> int:
    # dlib (tensor_tools / cuDNN): 1 + (size + 2*pad - k) / stride, integer division
    return 1 + (size + 2 * pad - k) // stride


def _build_model(net: DlibNet) -> Any:
    try:
        import onnx
        from onnx import TensorProto, helper
    except ModuleNotFoundError:
        raise ModelBuildError(
            "building the ONNX model needs the onnx package: pip install 'fr-pbd[build]'"
        ) from None

    g = _GraphBuilder(onnx)
    h, w = net.input_size
    # input_rgb_image_sized::to_tensor: (pixel - avg) / 256, R, G, B planes.
    mean = g.const("input_mean", np.array(net.mean_rgb, dtype=np.float32).reshape(1, 3, 1, 1))
    scale = g.const("input_scale", np.array(1.0 / 256.0, dtype=np.float32))
    x = g.node("Sub", [INPUT_NAME, mean], (3, h, w))
    x = g.node("Mul", [x, scale], (3, h, w))

    tags: dict[int, str] = {}
    layers = net.layers
    i = 0
    n_conv = 0
    while i < len(layers):
        layer = layers[i]
        c, hh, ww = g.shapes[x]
        if isinstance(layer, Conv):
            if layer.weight.shape[1] != c:
                raise ModelBuildError(f"conv {n_conv} expects {layer.weight.shape[1]} channels, gets {c}")
            wt = layer.weight.astype(np.float64)
            bs = layer.bias.astype(np.float64)
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            if isinstance(nxt, Affine) and nxt.conv_mode:
                # Frozen batch norm folded into the conv: (conv(x)+b)*g + beta.
                gm = nxt.gamma.astype(np.float64)
                wt = wt * gm[:, None, None, None]
                bs = bs * gm + nxt.beta.astype(np.float64)
                i += 1
            n_conv += 1
            wn = g.const(f"conv{n_conv}.weight", wt.astype(np.float32))
            bn = g.const(f"conv{n_conv}.bias", bs.astype(np.float32))
            (kh, kw), (sy, sx), (py, px) = layer.kernel, layer.stride, layer.padding
            shape = (layer.num_filters, _out_size(hh, kh, sy, py), _out_size(ww, kw, sx, px))
            x = g.node("Conv", [x, wn, bn], shape, kernel_shape=[kh, kw], strides=[sy, sx],
                       pads=[py, px, py, px], dilations=[1, 1], group=1)
        elif isinstance(layer, Affine):
            gshape = (1, -1, 1, 1) if layer.conv_mode else (1, *layer.gamma.shape)
            gm = g.const(g.name("affine.gamma"), layer.gamma.reshape(gshape))
            bt = g.const(g.name("affine.beta"), layer.beta.reshape(gshape))
            x = g.node("Mul", [x, gm], (c, hh, ww))
            x = g.node("Add", [x, bt], (c, hh, ww))
        elif isinstance(layer, Relu):
            x = g.node("Relu", [x], (c, hh, ww))
        elif isinstance(layer, Pool):
            (kh, kw), (sy, sx), (py, px) = layer.kernel, layer.stride, layer.padding
            if kh == 0 and kw == 0:
                if layer.kind == "max":
                    x = g.node("GlobalMaxPool", [x], (c, 1, 1))
                else:
                    x = g.node("GlobalAveragePool", [x], (c, 1, 1))
            else:
                shape = (c, _out_size(hh, kh, sy, py), _out_size(ww, kw, sx, px))
                if layer.kind == "max":
                    x = g.node("MaxPool", [x], shape, kernel_shape=[kh, kw], strides=[sy, sx],
                               pads=[py, px, py, px])
                else:  # dlib/cuDNN average pooling excludes padding from the count
                    x = g.node("AveragePool", [x], shape, kernel_shape=[kh, kw], strides=[sy, sx],
                               pads=[py, px, py, px], count_include_pad=0)
        elif isinstance(layer, Tag):
            tags[layer.id] = x
        elif isinstance(layer, Skip):
            x = tags[layer.id]
        elif isinstance(layer, AddPrev):
            # tt::add: output has the larger of each dimension; each input is
            # zero-padded at the end (bottom/right, extra channels) to fit.
            other = tags[layer.id]
            s1, s2 = g.shapes[x], g.shapes[other]
            target = tuple(max(a, b) for a, b in zip(s1, s2))
            ins = []
            for t, s in ((x, s1), (other, s2)):
                if s != target:
                    pads = np.array([0, 0, 0, 0, 0] + [tt - ss for tt, ss in zip(target, s)],
                                    dtype=np.int64)
                    pn = g.const(g.name("pad"), pads)
                    t = g.node("Pad", [t, pn], target, mode="constant")
                ins.append(t)
            x = g.node("Add", ins, target)
        elif isinstance(layer, Fc):
            if c * hh * ww != layer.num_inputs:
                raise ModelBuildError(f"fc expects {layer.num_inputs} inputs, gets {c * hh * ww}")
            x = g.node("Flatten", [x], None, axis=1)
            wn = g.const("fc.weight", layer.weight)
            last = layer.bias is None and i == len(layers) - 1
            x = g.node("MatMul", [x, wn], None, out=OUTPUT_NAME if last else None)
            if layer.bias is not None:
                bn = g.const("fc.bias", layer.bias)
                x = g.node("Add", [x, bn], None, out=OUTPUT_NAME if i == len(layers) - 1 else None)
            g.shapes[x] = (layer.num_outputs, 1, 1)
        else:  # pragma: no cover
            raise AssertionError(layer)
        i += 1

    if x != OUTPUT_NAME:
        raise ModelBuildError("the network does not end in a fully connected layer")

    graph = helper.make_graph(
        g.nodes,
        "dlib_face_recognition_resnet_model_v1",
        inputs=[helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 3, h, w])],
        outputs=[helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", EMBEDDING_DIM])],
        initializer=g.inits,
    )
    model = helper.make_model(
        graph,
        ir_version=ONNX_IR_VERSION,
        opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
        producer_name=PRODUCER_NAME,
        producer_version=PRODUCER_VERSION,
        doc_string=(
            "dlib_face_recognition_resnet_model_v1 (Davis King, CC0), converted by fr-pbd from "
            "dlib's .dat. Input: float32 [N,3,150,150] RGB 0-255 NCHW (mean subtraction and "
            "/256 are inside the graph). Output: raw 128-d dlib descriptor, not normalised."
        ),
    )
    helper.set_model_props(model, {
        "model_id": MODEL_ID,
        "source": DAT_NAME,
        "source_sha256": net.source_sha256,
        "licence": "CC0-1.0",
    })
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:  # onnx raises several types; all mean "our graph is wrong"
        raise ModelBuildError(f"generated ONNX graph failed the onnx checker: {str(e).splitlines()[0]}") from None
    return model


@dataclass
class BuildReport:
    """What a build produced, for the CLI and the manifest."""

    path: Path
    sha256: str
    size_bytes: int
    n_weights: int
    parse_seconds: float
    total_seconds: float
    source_sha256: str
    opset: int = ONNX_OPSET
    ir_version: int = ONNX_IR_VERSION
    io: dict[str, Any] = field(default_factory=lambda: {
        "input": {"name": INPUT_NAME, "shape": ["N", 3, INPUT_SIZE, INPUT_SIZE], "dtype": "float32",
                  "layout": "NCHW", "channels": "RGB", "range": "0-255"},
        "output": {"name": OUTPUT_NAME, "shape": ["N", EMBEDDING_DIM], "dtype": "float32"},
    })


def build_dlib_resnet_report(out_path: Path, dat_path: Path | None = None) -> BuildReport:
    """Parse the .dat, write the ONNX file atomically, and report timings and hash."""
    t0 = time.perf_counter()
    dat = Path(dat_path) if dat_path is not None else default_dat_path()
    net = parse_dlib_dat(dat)
    model = _build_model(net)
    data = model.SerializeToString(deterministic=True)
    out_path = Path(out_path)
    from fr_pbd.build.yunet_variants import write_model

    write_model(out_path, data)
    report = BuildReport(
        path=out_path,
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        n_weights=net.n_weights,
        parse_seconds=net.parse_seconds,
        total_seconds=time.perf_counter() - t0,
        source_sha256=net.source_sha256,
    )
    log.info("wrote %s (%d bytes, sha256 %s) in %.3f s", out_path, report.size_bytes,
             report.sha256, report.total_seconds)
    return report


def build_dlib_resnet(out_path: Path, dat_path: Path | None = None) -> str:
    """Convert dlib's face descriptor network to ONNX; returns the sha256 hex of the file."""
    return build_dlib_resnet_report(out_path, dat_path).sha256


def build_verified(dat_path: Path | str | None = None) -> Path:
    """Build ``dlib-resnet-v1`` into fr-pbd's model cache and check it against the manifest's pin."""
    from fr_pbd import models

    spec = models.spec("dlib-resnet-v1")
    out = models.cache_dir() / spec.file
    digest = build_dlib_resnet(out, Path(dat_path) if dat_path is not None else None)
    if digest != spec.sha256:
        out.unlink(missing_ok=True)
        raise ModelBuildError(
            f"the built {spec.file} has sha256 {digest}, the manifest pins {spec.sha256}; "
            "removed (is face_recognition_models the pinned 0.3.0?)")
    return out
