"""Structure-LTH pruning of PyTorch CNNs (Chen et al., ICML 2022, arXiv 2202.04736) and ONNX export.

The prunable layers are the ``nn.Conv2d`` of a model except the first one; the classifier (``nn.Linear``) is
never pruned. A :class:`Pruner` puts a mask on each prunable weight with ``torch.nn.utils.parametrize``, so
the weight the model computes with is always ``original * mask``: pruned weights stay zero through any
number of optimizer steps (their gradient is zero, and whatever weight decay does to ``original`` is masked
away). A BatchNorm registered right after a conv with the same channel count gets a channel mask on its
scale and shift, so an output channel whose weights are all pruned is removed entirely (its BatchNorm shift
would otherwise keep it alive as a constant).

Methods, all on top of iterative magnitude pruning (IMP) with weight rewinding (:func:`structure_lth`):

- ``"imp"``: unstructured; each round prunes ``rate`` (20%) of the remaining weights by global magnitude.
- ``"refill"`` / ``"refill+"``: after each pruning round, :func:`~vaqf.frontend.torch.sparse.refill_mask`
  makes each layer channel-wise sparse (whole output channels zero, the others dense).
- ``"regroup"``: after each pruning round, :func:`~vaqf.frontend.torch.sparse.regroup_mask` makes each layer
  group-wise sparse (dense blocks of rows x columns, zero elsewhere).

and, as the baseline, :meth:`Pruner.random_erk` (random masks with Erdos-Renyi-Kernel layer densities).

:func:`export_onnx` bakes the masks into the weights (exact zeros) and writes plain ONNX (Conv with
BatchNorm folded, Relu, Add, MaxPool, GlobalAveragePool, Flatten, Gemm); the compiler finds the structure
from the weights alone. A JSON summary (per layer: sparsity, kept channels, dense blocks) can be written
next to it for people to read.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn
from torch.nn.utils import parametrize
from tqdm.auto import tqdm

from vaqf.frontend.torch.sparse import (
    Block,
    erk_densities,
    find_blocks,
    random_mask,
    refill_mask,
    regroup_mask,
)
from vaqf.frontend.torch.sparse.structure import REFILL_CRITERIA

log = logging.getLogger(__name__)

METHODS = ("imp", "refill", "refill+", "regroup")
OPSET = 17
MAX_IR_VERSION = 10


class WeightMask(nn.Module):
    """Parametrization ``weight = original * mask`` with a boolean-valued float buffer ``mask``."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.detach().clone().float())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


class ChannelMask(nn.Module):
    """Parametrization of a per-channel BatchNorm vector (scale or shift): ``value * mask``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("mask", torch.ones(channels))

    def forward(self, value: torch.Tensor) -> torch.Tensor:
        return value * self.mask


def prunable_convs(model: nn.Module, skip_first: bool = True, exclude: Iterable[str] = ()) -> dict[str, nn.Conv2d]:
    """The model's ``nn.Conv2d`` layers by qualified name, in registration order, without the first one (the
    stem, when ``skip_first``) and without the names in ``exclude``. Linear layers are never included."""
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if skip_first:
        convs = convs[1:]
    skip = set(exclude)
    return {n: m for n, m in convs if n not in skip}


def following_batchnorms(model: nn.Module) -> dict[str, str]:
    """For each conv, the ``nn.BatchNorm2d`` registered right after it with as many channels (if any)."""
    # containers (a parametrized module's ModuleDict and ParametrizationList among them) and masks sit between
    # a conv and its BatchNorm in named_modules() order without being layers
    mods = [(n, m) for n, m in model.named_modules()
            if not isinstance(m, (WeightMask, ChannelMask, nn.ModuleDict, nn.ModuleList))]
    out: dict[str, str] = {}
    for (name, mod), (next_name, nxt) in zip(mods, mods[1:], strict=False):
        if isinstance(mod, nn.Conv2d) and isinstance(nxt, nn.BatchNorm2d) and nxt.num_features == mod.out_channels:
            out[name] = next_name
    return out


def weight_matrix(conv: nn.Conv2d) -> np.ndarray:
    """A conv weight as the matrix [c_out, c_in*kh*kw] (float32 numpy)."""
    return conv.weight.detach().cpu().float().reshape(conv.out_channels, -1).numpy()


class Pruner:
    """Masks on the prunable convolutions of ``model`` (and the BatchNorms that follow them).

    Constructing a Pruner attaches all-ones masks, so captured states (:meth:`capture`) always have the same
    keys. ``layers`` names the prunable convs (default: :func:`prunable_convs`).
    """

    def __init__(self, model: nn.Module, layers: Iterable[str] | None = None, mask_batchnorm: bool = True) -> None:
        self.model = model
        modules = dict(model.named_modules())
        names = list(prunable_convs(model)) if layers is None else list(layers)
        for n in names:
            if not isinstance(modules.get(n), nn.Conv2d):
                raise ValueError(f"{n!r} is not an nn.Conv2d of the model")
        self.layers: dict[str, nn.Conv2d] = {n: modules[n] for n in names}
        bns = following_batchnorms(model) if mask_batchnorm else {}
        self.batchnorms: dict[str, nn.BatchNorm2d] = {n: modules[bns[n]] for n in names if n in bns}
        self.blocks: dict[str, list[Block]] = {}
        if any(parametrize.is_parametrized(m) for m in [*self.layers.values(), *self.batchnorms.values()]):
            raise ValueError("the model already carries parametrizations on a prunable layer; make one Pruner per "
                             "model")
        for conv in self.layers.values():
            parametrize.register_parametrization(conv, "weight", WeightMask(torch.ones_like(conv.weight)))
        for bn in self.batchnorms.values():
            if bn.affine:
                parametrize.register_parametrization(bn, "weight", ChannelMask(bn.num_features))
                parametrize.register_parametrization(bn, "bias", ChannelMask(bn.num_features))

    # -- masks -----------------------------------------------------------------------------------------
    def _mask_buffer(self, name: str) -> torch.Tensor:
        return self.layers[name].parametrizations.weight[0].mask

    def masks(self) -> dict[str, torch.Tensor]:
        """The current masks (boolean tensors shaped like the weights)."""
        return {n: self._mask_buffer(n).bool().clone() for n in self.layers}

    def set_masks(self, masks: Mapping[str, torch.Tensor | np.ndarray]) -> None:
        """Replace masks (any subset of the layers); BatchNorm channel masks follow the conv rows. The blocks
        recorded by :meth:`regroup` for those layers are forgotten."""
        for n in masks:
            self.blocks.pop(n, None)
        self._write_masks(masks)

    @torch.no_grad()
    def _write_masks(self, masks: Mapping[str, torch.Tensor | np.ndarray]) -> None:
        for n, m in masks.items():
            buf = self._mask_buffer(n)
            t = torch.as_tensor(np.asarray(m) if isinstance(m, np.ndarray) else m).reshape(buf.shape)
            buf.copy_(t.to(buf.dtype))
        self._sync_batchnorm()

    @torch.no_grad()
    def _sync_batchnorm(self) -> None:
        for n, bn in self.batchnorms.items():
            if not bn.affine:
                continue
            alive = self._mask_buffer(n).reshape(self.layers[n].out_channels, -1).any(dim=1).float()
            bn.parametrizations.weight[0].mask.copy_(alive)
            bn.parametrizations.bias[0].mask.copy_(alive)

    def sparsity(self) -> float:
        """Fraction of zero mask entries over all prunable layers."""
        total = sum(c.weight.numel() for c in self.layers.values())
        kept = sum(int(self._mask_buffer(n).sum()) for n in self.layers)
        return 1.0 - kept / total if total else 0.0

    def layer_sparsity(self) -> dict[str, float]:
        return {n: 1.0 - float(self._mask_buffer(n).mean()) for n in self.layers}

    # -- pruning ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def magnitude_prune(self, rate: float = 0.2) -> None:
        """Prune ``round(rate * remaining)`` of the remaining weights with the smallest magnitude, ranked
        globally over all prunable layers (ties: earlier layer, then lower index)."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be in [0, 1], got {rate}")
        alive = [self._mask_buffer(n).flatten().nonzero().squeeze(1) for n in self.layers]
        scores = torch.cat([c.weight.detach().abs().flatten()[idx].double()
                            for c, idx in zip(self.layers.values(), alive, strict=True)])
        n_prune = int(round(rate * scores.numel()))
        if n_prune == 0:
            return
        pruned = torch.argsort(scores, stable=True)[:n_prune]
        offsets = np.cumsum([0] + [len(a) for a in alive])
        new = {}
        for i, n in enumerate(self.layers):
            sel = pruned[(pruned >= offsets[i]) & (pruned < offsets[i + 1])] - int(offsets[i])
            m = self._mask_buffer(n).flatten().clone()
            m[alive[i][sel]] = 0.0
            new[n] = m
        self.set_masks(new)

    def refill(self, criterion: str = "l1", fillback_rate: float = 0.0) -> None:
        """Channel-wise refill (``fillback_rate > 0``: refill+) of every prunable layer."""
        new = {}
        for n, conv in self.layers.items():
            mask = self._mask_buffer(n).bool().cpu().reshape(conv.out_channels, -1).numpy()
            new[n] = refill_mask(mask, weight_matrix(conv), criterion, fillback_rate)
        self.set_masks(new)

    def regroup(self, n_parts: int = 8, block_rows: int = 32, min_group_rows: int | None = None,
                min_fill: float = 0.0, partitioner: str = "auto", seed: int = 0,
                progress: bool | None = None) -> dict[str, list[Block]]:
        """Group-wise regroup of every prunable layer; returns (and keeps in ``blocks``) each layer's blocks.
        ``progress``: a tqdm bar (None: when stderr is a terminal)."""
        new, blocks = {}, {}
        for n, conv in tqdm(self.layers.items(), desc="regroup", leave=False, disable=_disable(progress)):
            mask = self._mask_buffer(n).bool().cpu().reshape(conv.out_channels, -1).numpy()
            new[n], blocks[n] = regroup_mask(mask, n_parts, block_rows, min_group_rows, None, min_fill, partitioner,
                                             seed)
        self.set_masks(new)
        self.blocks = blocks
        return dict(blocks)

    def random_erk(self, density: float, seed: int = 0, power: float = 1.0) -> dict[str, float]:
        """Random masks with ERK layer densities averaging ``density``; returns the layer densities."""
        shapes = {n: tuple(c.weight.shape) for n, c in self.layers.items()}
        dens = erk_densities(shapes, density, power)
        rng = np.random.default_rng(seed)
        self.set_masks({n: random_mask(shapes[n], dens[n], rng) for n in self.layers})
        return dens

    # -- rewinding -------------------------------------------------------------------------------------
    def capture(self) -> dict[str, torch.Tensor]:
        """A copy of the model's full state (parameters and buffers) to rewind to."""
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    @torch.no_grad()
    def rewind(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore every parameter and buffer from ``state`` except the masks, which stay as they are."""
        masks = self.masks()
        self.model.load_state_dict(dict(state))
        self._write_masks(masks)

    # -- results ---------------------------------------------------------------------------------------
    def baked(self) -> nn.Module:
        """A copy of the model without parametrizations: masks multiplied into the weights (exact zeros)."""
        return bake(self.model)


def bake(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every parametrization removed and its current value kept."""
    out = copy.deepcopy(model)
    for mod in list(out.modules()):
        if parametrize.is_parametrized(mod):
            # Not parametrize.remove_parametrizations: a deep copy shares the generated Parametrized* class
            # with the original, and removal deletes the property from that class, breaking the original.
            values = {name: getattr(mod, name).detach().clone() for name in mod.parametrizations}
            del mod._modules["parametrizations"]
            mod.__class__ = type(mod).__bases__[0]
            for name, value in values.items():
                mod.register_parameter(name, nn.Parameter(value))
    return out


@dataclass
class PruneConfig:
    """How :func:`structure_lth` prunes. ``block_rows`` should be smaller than 32 for narrow layers."""

    method: str = "imp"
    rounds: int = 5
    rate: float = 0.2
    criterion: str = "l1"            # refill: "l1" or "count"
    fillback_rate: float = 0.0       # refill+ (0.1 when method is "refill+" and this is 0)
    n_parts: int = 8                 # regroup: hypergraph parts per layer
    block_rows: int = 32             # regroup: row groups are multiples of this
    min_group_rows: int | None = None
    min_fill: float = 0.0
    partitioner: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown pruning method {self.method!r}; choose one of {METHODS}")
        if self.criterion not in REFILL_CRITERIA:
            raise ValueError(f"unknown refill criterion {self.criterion!r}; choose one of {REFILL_CRITERIA}")
        if self.method == "refill+" and self.fillback_rate == 0.0:
            self.fillback_rate = 0.1
        if self.rounds < 0 or not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"need rounds >= 0 and rate in [0, 1], got {self.rounds}, {self.rate}")


@dataclass
class RoundRecord:
    """One IMP round: the sparsity of the prunable layers after it, and the metric after retraining."""

    round: int
    sparsity: float
    layer_sparsity: dict[str, float] = field(default_factory=dict)
    metric: float | None = None


def _disable(progress: bool | None) -> bool | None:
    """tqdm's ``disable`` for ``progress``: None shows a bar when the output is a terminal."""
    return None if progress is None else not progress


def structure_step(pruner: Pruner, config: PruneConfig, progress: bool | None = None) -> None:
    """Prune once by global magnitude, then impose the method's structure."""
    pruner.magnitude_prune(config.rate)
    if config.method in ("refill", "refill+"):
        pruner.refill(config.criterion, config.fillback_rate)
    elif config.method == "regroup":
        pruner.regroup(config.n_parts, config.block_rows, config.min_group_rows, config.min_fill,
                       config.partitioner, config.seed, progress)


def structure_lth(pruner: Pruner, train: Callable[[nn.Module], None], config: PruneConfig,
                  rewind_state: Mapping[str, torch.Tensor], evaluate: Callable[[nn.Module], float] | None = None,
                  trained: bool = False, final_train: Callable[[nn.Module], None] | None = None,
                  on_round: Callable[[RoundRecord], None] | None = None,
                  progress: bool | None = None) -> list[RoundRecord]:
    """IMP with weight rewinding, optionally with refill or regroup after every pruning step.

    Each of ``config.rounds`` rounds: train (skipped in round 1 when ``trained``: the model already is),
    prune ``rate`` of the remaining weights by global magnitude, refill or regroup the masks, rewind all
    weights to ``rewind_state`` (taken a few epochs into dense training). After the last round the final
    subnetwork is trained once more, so the model comes back trained at sparsity ``1 - (1 - rate)^rounds``
    (about that for refill/regroup, which keep each layer's density). ``train(model)`` trains in place with a
    fresh optimizer; ``final_train`` (default ``train``) trains the final subnetwork, e.g. with the full schedule
    when the intermediate rounds use a short one; ``evaluate(model)`` returns a metric recorded after each
    retraining. ``on_round(record)`` is called as each round's record is complete (after the retraining that
    follows it). ``progress``: a tqdm bar over the rounds (None: when stderr is a terminal).
    """
    records: list[RoundRecord] = []

    def finish(record: RoundRecord) -> None:
        if evaluate is not None:
            record.metric = evaluate(pruner.model)
        if on_round is not None:
            on_round(record)

    for r in tqdm(range(config.rounds), desc=f"IMP-{config.method}", disable=_disable(progress)):
        if r > 0 or not trained:
            train(pruner.model)
            if records:
                finish(records[-1])
        structure_step(pruner, config, progress)
        pruner.rewind(rewind_state)
        records.append(RoundRecord(r + 1, pruner.sparsity(), pruner.layer_sparsity()))
        log.info("%s round %d: sparsity %.4f", config.method, r + 1, records[-1].sparsity)
    (final_train or train)(pruner.model)
    if records:
        finish(records[-1])
    return records


# -- summary and export --------------------------------------------------------------------------------------


def layer_summary(model: nn.Module, prunable: Iterable[str] | None = None,
                  example: torch.Tensor | None = None) -> dict:
    """Per conv layer: shape, non-zeros, sparsity, kept output channels and dense blocks (read from the weights
    alone, as a compiler would); plus the overall sparsity of the prunable layers. With an ``example`` input
    (one image), also multiply-accumulates per image: ``dense_macs`` and ``macs`` (non-zero weights only),
    per layer and in total (convs and linear layers)."""
    names = set(prunable_convs(model) if prunable is None else prunable)
    pixels = _output_pixels(model, example) if example is not None else {}
    layers = {}
    total = zeros = 0
    macs = dense_macs = 0
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear) and name in pixels:
            nnz = int((mod.weight != 0).sum())
            macs, dense_macs = macs + nnz * pixels[name], dense_macs + mod.weight.numel() * pixels[name]
        if not isinstance(mod, nn.Conv2d):
            continue
        w = weight_matrix(mod)
        nz = w != 0
        blocks = find_blocks(nz)
        kept = np.flatnonzero(nz.any(axis=1))
        layers[name] = {
            "shape": list(mod.weight.shape), "prunable": name in names, "nnz": int(nz.sum()),
            "sparsity": round(1.0 - float(nz.mean()), 6), "channels": int(mod.out_channels),
            "kept_channels": kept.tolist(), "dense_rows": int(nz.all(axis=1).sum()),
            "blocks": [{"rows": list(b.rows), "n_cols": len(b.cols)} for b in blocks],
        }
        if name in pixels:
            layers[name]["dense_macs"] = int(nz.size * pixels[name])
            layers[name]["macs"] = int(nz.sum() * pixels[name])
            macs, dense_macs = macs + layers[name]["macs"], dense_macs + layers[name]["dense_macs"]
        if name in names:
            total += nz.size
            zeros += int((~nz).sum())
    out: dict = {"sparsity": round(zeros / total, 6) if total else 0.0}
    if pixels:
        out.update(dense_macs=int(dense_macs), macs=int(macs))
    out["layers"] = layers
    return out


def _output_pixels(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """Output positions per image of every conv (H*W) and linear layer (1 for a flat input) in one forward."""
    seen: dict[str, int] = {}

    def hook(name: str) -> Callable:
        def record(_m: nn.Module, _i: tuple, out: torch.Tensor) -> None:
            seen[name] = int(out[0].numel() // out.shape[1]) if out.dim() > 2 else 1
        return record

    hooks = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d,
                                                                                                 nn.Linear))]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(example[:1])
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return seen


def _conv_execution_order(model: nn.Module, example: torch.Tensor) -> list[str]:
    order: list[str] = []
    hooks = [m.register_forward_hook(lambda _m, _i, _o, n=n: order.append(n))
             for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    return order


def _tidy_initializers(proto: onnx.ModelProto, conv_names: list[str]) -> None:
    """Inline Identity copies of initializers (the exporter shares equal folded biases through them) and
    name each Conv's weight and bias after its PyTorch module when the Convs match the modules one to one."""
    g = proto.graph
    inits = {t.name: t for t in g.initializer}
    outputs = {o.name for o in g.output}
    kept = []
    for n in g.node:
        if n.op_type == "Identity" and n.input[0] in inits and n.output[0] not in outputs:
            t = onnx.TensorProto()
            t.CopyFrom(inits[n.input[0]])
            t.name = n.output[0]
            g.initializer.append(t)
            inits[t.name] = t
            continue
        kept.append(n)
    del g.node[:]
    g.node.extend(kept)
    convs = [n for n in g.node if n.op_type == "Conv"]
    if len(convs) != len(conv_names):
        return
    uses: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    rename: dict[str, str] = {}
    for node, module in zip(convs, conv_names, strict=True):
        for i, suffix in ((1, "weight"), (2, "bias")):
            if i < len(node.input) and node.input[i] in inits and uses[node.input[i]] == 1:
                new = f"{module}.{suffix}"
                if new not in inits and new not in rename.values():
                    rename[node.input[i]] = new
    for t in g.initializer:
        t.name = rename.get(t.name, t.name)
    for n in g.node:
        for i, name in enumerate(n.input):
            n.input[i] = rename.get(name, name)


def export_onnx(model: nn.Module, path: str | Path, example: torch.Tensor, summary: bool = True,
                prunable: Iterable[str] | None = None, opset: int = OPSET) -> Path:
    """Write ``model`` (pruned through a :class:`Pruner` or not) as ONNX with its masks baked in as zeros.

    The model is exported in eval mode with the TorchScript exporter, so BatchNorm folds into the convs
    (zeros stay exactly zero); the batch axis is dynamic; the IR version is at most 10. With ``summary``,
    ``<path>.json`` gets :func:`layer_summary`. ``prunable`` names the pruned layers for the summary (default:
    those a Pruner would pick). Returns the path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plain = bake(model).eval()
    prunable = list(prunable_convs(plain) if prunable is None else prunable)
    conv_names = _conv_execution_order(plain, example)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter warns about its own deprecation
        torch.onnx.export(plain, (example,), str(path), dynamo=False, opset_version=opset, input_names=["x"],
                          output_names=["logits"], dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
                          do_constant_folding=True)
    proto = onnx.load(str(path))
    _tidy_initializers(proto, conv_names)
    proto.ir_version = min(proto.ir_version, MAX_IR_VERSION)
    proto.producer_name = "vaqf.frontend.torch.prune"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    info = layer_summary(plain, prunable, example)
    if summary:
        write_summary(path.with_suffix(path.suffix + ".json"), info)
    log.info("exported %s: sparsity %.4f over %d pruned convs", path, info["sparsity"], len(prunable))
    return path


def write_summary(path: str | Path, info: Mapping) -> Path:
    """Write a JSON summary (:func:`layer_summary`, or a run's record holding one), one line per list of numbers
    (row indices) so the file stays readable."""
    text = json.dumps(info, indent=1)
    text = re.sub(r"\[\s+([-\d.,\s]+?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)
    Path(path).write_text(text + "\n")
    return Path(path)


def records_to_json(records: Iterable[RoundRecord]) -> list[dict]:
    return [asdict(r) for r in records]
