"""Pruning PyTorch CNNs: masks, global magnitude ranking, refill/regroup/ERK on models, rewinding, IMP, export."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import numpy_helper  # noqa: E402
from torch import nn  # noqa: E402

from vaqf.frontend.torch.cnn import resnet18, resnet20, small_resnet, small_vgg, vgg  # noqa: E402
from vaqf.frontend.torch.prune import (  # noqa: E402
    PruneConfig,
    Pruner,
    bake,
    export_onnx,
    layer_summary,
    prunable_convs,
    structure_lth,
)
from vaqf.frontend.torch.sparse import erk_densities, find_blocks  # noqa: E402


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _batch(n: int = 16, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(n, 1, size, size), torch.randint(0, 10, (n,))


def _train_steps(model: nn.Module, steps: int = 3, size: int = 8) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    model.train()
    for _ in range(steps):
        x, y = _batch(size=size)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()


def _first_conv_and_classifier(model: nn.Module) -> dict[str, torch.Tensor]:
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    fc = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    return {"first": first.weight.detach().clone(), "fc": fc.weight.detach().clone()}


def _conv_matrix(conv: nn.Conv2d) -> np.ndarray:
    return conv.weight.detach().reshape(conv.out_channels, -1).numpy()


# -- models ---------------------------------------------------------------------------------------------------


def test_cnn_shapes_and_sizes() -> None:
    assert sum(p.numel() for p in resnet20().parameters()) == 272_474
    assert sum(p.numel() for p in resnet18().parameters()) == 11_173_962
    x = torch.randn(2, 3, 32, 32)
    for model in (resnet20(num_classes=100), vgg("vgg11", num_classes=100, width_multiplier=0.25)):
        assert model.eval()(x).shape == (2, 100)
    for size in (8, 28):
        for model in (small_resnet(), small_vgg()):
            assert model.eval()(torch.randn(2, 1, size, size)).shape == (2, 10)
    first = next(m for m in resnet18().modules() if isinstance(m, nn.Conv2d))
    assert first.kernel_size == (3, 3) and first.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in resnet18().modules())


def test_prunable_layers_skip_first_conv_and_classifier() -> None:
    model = small_resnet()
    names = list(prunable_convs(model))
    assert "conv1" not in names and all(not n.startswith("fc") for n in names)
    assert "layers.1.0.shortcut.0" in names and len(names) == 8


def test_batchnorm_pairing_and_one_pruner_per_model() -> None:
    model = small_resnet()
    pruner = Pruner(model)
    assert set(pruner.batchnorms) == set(pruner.layers)
    assert pruner.batchnorms["layers.1.0.shortcut.0"] is model.layers[1][0].shortcut[1]
    assert pruner.batchnorms["layers.2.0.conv2"] is model.layers[2][0].bn2
    with pytest.raises(ValueError, match="one Pruner per model"):
        Pruner(model)
    with pytest.raises(ValueError, match="not an nn.Conv2d"):
        Pruner(small_vgg(), layers=["classifier"])


# -- masks ----------------------------------------------------------------------------------------------------


def test_masks_zero_weights_and_stay_zero_after_training() -> None:
    model = small_vgg()
    pruner = Pruner(model)
    pruner.magnitude_prune(0.5)
    masks = pruner.masks()
    _train_steps(model, steps=5)
    for name, conv in pruner.layers.items():
        w = conv.weight.detach()
        assert (w[~masks[name]] == 0).all()
        assert (w[masks[name]] != 0).all()
    assert pruner.masks().keys() == masks.keys()
    assert all(torch.equal(pruner.masks()[n], masks[n]) for n in masks)
    baked = pruner.baked()
    for name, conv in pruner.layers.items():
        assert torch.equal(dict(baked.named_modules())[name].weight, conv.weight.detach())
    # baking left the original model working
    x, _ = _batch()
    torch.testing.assert_close(baked.eval()(x), model.eval()(x))


def test_global_magnitude_prunes_the_right_fraction() -> None:
    model = small_resnet()
    before = _first_conv_and_classifier(model)
    pruner = Pruner(model)
    total = sum(c.weight.numel() for c in pruner.layers.values())
    pruner.magnitude_prune(0.2)
    assert pruner.sparsity() == pytest.approx(round(0.2 * total) / total, abs=1e-12)
    # global: every pruned weight is at most as large as every surviving one, across layers
    masks = pruner.masks()
    with torch.no_grad():
        orig = {n: c.parametrizations.weight.original.abs() for n, c in pruner.layers.items()}
    pruned_max = max(float(orig[n][~masks[n]].max()) for n in masks if (~masks[n]).any())
    kept_min = min(float(orig[n][masks[n]].min()) for n in masks)
    assert pruned_max <= kept_min
    assert len({round(s, 2) for s in pruner.layer_sparsity().values()}) > 1, "ranking is global, not per layer"
    pruner.magnitude_prune(0.2)
    assert pruner.sparsity() == pytest.approx(1 - 0.8 * 0.8, abs=2 / total)
    after = _first_conv_and_classifier(model)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_refill_on_a_model_removes_whole_channels_and_their_batchnorm() -> None:
    model = small_resnet()
    pruner = Pruner(model)
    for _ in range(3):
        pruner.magnitude_prune(0.2)
    density = {n: 1 - s for n, s in pruner.layer_sparsity().items()}
    pruner.refill("l1")
    x, _ = _batch()
    model.eval()(x)
    for name, conv in pruner.layers.items():
        w = _conv_matrix(conv) != 0
        assert np.array_equal(w.all(axis=1), w.any(axis=1)), f"{name}: rows are all-zero or dense"
        assert abs(w.mean() - density[name]) <= 0.5 / conv.out_channels + 1e-9
        bn = pruner.batchnorms[name]
        dead = ~w.any(axis=1)
        assert dead.any()
        assert (bn.weight.detach().numpy()[dead] == 0).all() and (bn.bias.detach().numpy()[dead] == 0).all()


def test_regroup_on_a_model_gives_dense_blocks() -> None:
    model = small_resnet()
    pruner = Pruner(model)
    for _ in range(4):
        pruner.magnitude_prune(0.2)
    before = pruner.sparsity()
    blocks = pruner.regroup(n_parts=4, block_rows=8, partitioner="spectral")
    assert pruner.sparsity() == pytest.approx(before, abs=0.02)
    for name, conv in pruner.layers.items():
        w = _conv_matrix(conv) != 0
        cover = np.zeros_like(w)
        for b in blocks[name]:
            assert w[np.ix_(b.rows, b.cols)].all()
            cover[np.ix_(b.rows, b.cols)] = True
        np.testing.assert_array_equal(cover, w)
        for b in find_blocks(w):  # the same holds for blocks read from the weights alone
            assert w[np.ix_(b.rows, b.cols)].all()


def test_random_erk_matches_density_and_formula() -> None:
    model = small_resnet()
    pruner = Pruner(model)
    dens = pruner.random_erk(0.4, seed=3)
    assert pruner.sparsity() == pytest.approx(0.6, abs=1e-3)
    shapes = {n: tuple(c.weight.shape) for n, c in pruner.layers.items()}
    assert dens == erk_densities(shapes, 0.4)
    for n, s in pruner.layer_sparsity().items():
        assert 1 - s == pytest.approx(dens[n], abs=1.0 / np.prod(shapes[n]))


# -- rewinding and IMP ----------------------------------------------------------------------------------------


def test_rewinding_restores_survivors_to_the_rewind_point() -> None:
    model = small_vgg()
    pruner = Pruner(model)
    _train_steps(model, 2)
    state = pruner.capture()
    rewind_w = {n: c.weight.detach().clone() for n, c in pruner.layers.items()}
    bn_name, bn = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d))
    rewind_mean = bn.running_mean.clone()
    _train_steps(model, 4)
    pruner.magnitude_prune(0.3)
    masks = pruner.masks()
    assert not all(torch.equal(rewind_w[n], c.weight.detach() * 1) for n, c in pruner.layers.items())
    pruner.rewind(state)
    for n, c in pruner.layers.items():
        assert all(torch.equal(pruner.masks()[k], masks[k]) for k in masks), "rewinding keeps the masks"
        torch.testing.assert_close(c.weight.detach(), rewind_w[n] * masks[n], rtol=0, atol=0)
    torch.testing.assert_close(bn.running_mean, rewind_mean, rtol=0, atol=0)


@pytest.mark.parametrize("method", ["imp", "refill", "refill+", "regroup"])
def test_structure_lth_rounds(method: str) -> None:
    model = small_vgg()
    pruner = Pruner(model)
    _train_steps(model, 1)
    state = pruner.capture()
    calls = []
    cfg = PruneConfig(method=method, rounds=2, block_rows=8, n_parts=4, partitioner="spectral")
    records = structure_lth(pruner, lambda m: (calls.append(1), _train_steps(m, 1)), cfg, state,
                            evaluate=lambda m: 0.5)
    assert len(calls) == 3 and [r.round for r in records] == [1, 2]
    assert all(r.metric == 0.5 for r in records)
    target = 1 - 0.8 ** 2
    if method == "refill+":  # ~10% more channels kept in every round
        assert target - 0.2 < records[-1].sparsity < target - 0.02
    else:
        tol = {"imp": 1e-3, "refill": 0.05, "regroup": 0.03}[method]
        assert records[-1].sparsity == pytest.approx(target, abs=tol)
    for conv in pruner.layers.values():
        w = _conv_matrix(conv) != 0
        if method.startswith("refill"):
            assert np.array_equal(w.all(axis=1), w.any(axis=1))
        if method == "regroup":
            for b in pruner.blocks[next(n for n, c in pruner.layers.items() if c is conv)]:
                assert w[np.ix_(b.rows, b.cols)].all()


def test_prune_config_rejects_unknown_methods() -> None:
    with pytest.raises(ValueError, match="method"):
        PruneConfig(method="snip")
    assert PruneConfig(method="refill+").fillback_rate == 0.1


# -- export ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["small_vgg", "small_resnet"])
def test_export_has_the_zeros_and_matches_onnxruntime(tmp_path, arch: str) -> None:
    model = small_vgg() if arch == "small_vgg" else small_resnet()
    pruner = Pruner(model)
    _train_steps(model, 3)  # BatchNorm statistics away from their defaults
    for _ in range(3):
        pruner.magnitude_prune(0.2)
    pruner.refill("l1")
    _train_steps(model, 2)
    path = export_onnx(model, tmp_path / "m.onnx", torch.zeros(1, 1, 8, 8))
    proto = onnx.load(str(path))
    assert proto.ir_version <= 10
    ops = {n.op_type for n in proto.graph.node}
    assert ops <= {"Conv", "Relu", "Add", "MaxPool", "GlobalAveragePool", "Flatten", "Gemm"}
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    for name, conv in pruner.layers.items():
        w = inits[f"{name}.weight"]  # BatchNorm folded into the conv
        zero = conv.weight.detach().numpy() == 0
        assert zero.any()
        np.testing.assert_array_equal(w == 0, zero)
        # removed channels are removed entirely: no folded BatchNorm shift either
        dead = ~(~zero).reshape(conv.out_channels, -1).any(axis=1)
        assert (inits[f"{name}.bias"][dead] == 0).all()
    x, _ = _batch(8)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(got, model.eval()(x).detach().numpy(), rtol=1e-4, atol=1e-5)
    summary = (tmp_path / "m.onnx.json").read_text()
    assert '"kept_channels"' in summary


def test_layer_summary_reads_structure_from_weights() -> None:
    model = small_vgg()
    pruner = Pruner(model)
    for _ in range(2):
        pruner.magnitude_prune(0.3)
    pruner.refill("count")
    info = layer_summary(bake(model), pruner.layers)
    assert info["sparsity"] == pytest.approx(pruner.sparsity(), abs=1e-6)
    for name in pruner.layers:
        layer = info["layers"][name]
        assert layer["prunable"] and len(layer["blocks"]) == 1
        assert layer["dense_rows"] == len(layer["kept_channels"]) == layer["blocks"][0]["rows"].__len__()
    first = next(iter(info["layers"].values()))
    assert not first["prunable"] and first["sparsity"] == 0.0
