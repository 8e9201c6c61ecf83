"""Explainer behaviour: shapes and contracts, targets, side effects on the model, precision, guards."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from torch import nn

from streamcam import Explainer, StreamcamError, load_model, plan
from streamcam.plan import cpu_has_bf16 as real_cpu_has_bf16  # before conftest replaces it


@pytest.fixture(scope="module")
def resnet18():
    from conftest import spread_batchnorm

    return spread_batchnorm(load_model("resnet18", "none", device="cpu").model)


def test_result_contract_single_target(resnet18, batch):
    result = Explainer(resnet18)(batch)
    assert result.maps.shape == (2, 160, 224) and result.maps.dtype == torch.float32
    assert result.raw.shape == (2, 5, 7)  # layer4 of a 160x224 input: stride 32
    assert result.logits.shape == (2, 1000)
    assert torch.equal(result.targets, result.logits.argmax(1))
    assert 0 <= result.maps.min() and result.maps.max() <= 1
    assert torch.allclose(result.maps.amax(dim=(1, 2)), torch.ones(2))


def test_topk_gives_k_maps_each_equal_to_a_single_target_call(resnet18, batch):
    explainer = Explainer(resnet18, method="gradcam++")
    result = explainer(batch, topk=3)
    assert result.maps.shape == (2, 3, 160, 224) and result.targets.shape == (2, 3)
    assert torch.equal(result.targets, result.logits.topk(3, dim=1).indices)
    second = explainer(batch, result.targets[:, 1].tolist())
    assert (second.maps - result.maps[:, 1]).abs().max() < 1e-5


def test_topk_at_an_autograd_layer_matches_single_calls(resnet18, batch):
    explainer = Explainer(resnet18, method="layercam", layer="layer3.1")
    assert not explainer.analytic
    result = explainer(batch, topk=2)
    for k in range(2):
        single = explainer(batch, result.targets[:, k])
        assert (single.maps - result.maps[:, k]).abs().max() < 1e-5


def test_analytic_path_is_used_only_where_the_head_is_gap_then_linear(resnet18):
    assert Explainer(resnet18, layer="layer4").analytic
    assert Explainer(resnet18, layer="layer4.1").analytic  # same tensor as layer4
    assert not Explainer(resnet18, layer="layer4.0").analytic  # layer4.1 still follows
    assert not Explainer(resnet18, layer="layer3").analytic


def test_analytic_and_autograd_gradients_agree():
    """A model whose last block is followed by a ReLU before pooling: no analytic shortcut there, but
    at the ReLU itself there is. Both must give the same Grad-CAM map for the ReLU's output."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5),
    ).eval()
    x = torch.randn(3, 3, 32, 32)
    at_relu = Explainer(model, layer="3")
    at_conv = Explainer(model, layer="2")
    assert at_relu.analytic and not at_conv.analytic
    # Reference: autograd on the ReLU output by hand.
    activation = model[:4](x).requires_grad_(True)
    logits = model[4:](activation)
    targets = logits.argmax(1)
    (grads,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), activation)
    raw = torch.einsum("bc,bchw->bhw", grads.mean((2, 3)), activation.detach())
    assert torch.allclose(at_relu(x).raw, raw, atol=1e-6)


def test_model_is_unchanged_after_explaining(resnet18, batch):
    model = resnet18
    model.train()
    model.fc.requires_grad_(False)  # a partly frozen model must stay exactly as frozen as it was
    flags_before = [p.requires_grad for p in model.parameters()]
    with torch.no_grad():
        model.eval()
        reference = model(batch)
        model.train()
    for method, layer in [("gradcam", None), ("gradcam", "layer3"), ("scorecam", "layer4"), ("saliency", None)]:
        explainer = Explainer(model, method=method, layer=layer, **({"batch_size": 256} if method == "scorecam" else {}))
        explainer(batch[:1, :, :64, :64])
    assert model.training and all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == flags_before
    assert all(p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules())
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(batch), reference)
    model.fc.requires_grad_(True)


def test_no_parameter_gradients_are_computed(resnet18, batch):
    seen = []
    hooks = [p.register_hook(lambda g: seen.append(g)) for p in resnet18.parameters()]
    try:
        Explainer(resnet18, layer="layer2")(batch)
        Explainer(resnet18, method="saliency")(batch)
    finally:
        for hook in hooks:
            hook.remove()
    assert seen == []


def test_targets_by_class_name():
    loaded = load_model("resnet18", "none", device="cpu")
    names = tuple(f"class{i}" for i in range(1000))
    explainer = Explainer(loaded.model, class_names=names)
    result = explainer(torch.randn(2, 3, 64, 64), ["class7", "class999"])
    assert result.targets.tolist() == [7, 999]
    assert result.labels == ["class7", "class999"]
    assert explainer(torch.randn(2, 3, 64, 64), "class3").targets.tolist() == [3, 3]
    assert explainer(torch.randn(1, 3, 64, 64), [[1, "class2"]]).maps.shape == (1, 2, 64, 64)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda e, x: e(x, [1, 2, 3]), "3 targets for a batch of 2"),
        (lambda e, x: e(x, torch.tensor([1])), "1 targets for a batch of 2"),
        (lambda e, x: e(x, ["class1", "nope"]), "unknown class 'nope'"),
        (lambda e, x: e(x, [1, 5000]), "out of range"),
        (lambda e, x: e(x, [1, 2], topk=2), "either targets or topk"),
        (lambda e, x: e(x, topk=0), "topk must be between"),
        (lambda e, x: e(x[0]), "(B,3,H,W)"),
    ],
)
def test_bad_targets_and_inputs_raise_clear_errors(resnet18, batch, call, message):
    explainer = Explainer(resnet18, class_names=[f"class{i}" for i in range(1000)])
    with pytest.raises(StreamcamError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call(explainer, batch)


def test_class_names_need_names(resnet18, batch):
    with pytest.raises(StreamcamError, match="has no class names"):
        Explainer(resnet18)(batch, ["cat", "dog"])


def test_unknown_layer_lists_candidates(resnet18):
    with pytest.raises(StreamcamError) as error:
        Explainer(resnet18, layer="layer5")
    assert "unknown layer 'layer5'" in str(error.value) and "layer4" in str(error.value)
    with pytest.raises(StreamcamError, match="not a \\(B,C,H,W\\) feature map"):
        Explainer(resnet18, layer="fc")
    with pytest.raises(StreamcamError, match="runs 2 times"):
        Explainer(resnet18, layer="layer4.0.relu")


def test_unknown_method_and_bad_options(resnet18):
    with pytest.raises(StreamcamError, match="unknown method 'gradcamm'; did you mean gradcam"):
        Explainer(resnet18, method="gradcamm")
    with pytest.raises(StreamcamError, match="gradcam has no option n"):
        Explainer(resnet18, method="gradcam", n=3)
    with pytest.raises(StreamcamError, match="n must be > 0"):
        Explainer(resnet18, method="smoothgrad", n=0)
    with pytest.raises(StreamcamError, match="needs a layer that feeds global average pooling"):
        Explainer(resnet18, method="cam", layer="layer3")
    with pytest.raises(StreamcamError, match="takes no layer"):
        Explainer(resnet18, method="saliency", layer="layer4")
    with pytest.raises(StreamcamError, match="unknown precision"):
        Explainer(resnet18, precision="int8")


def test_default_layer_is_found_for_other_architectures():
    torch.manual_seed(0)
    for name, expected in [("mobilenet_v3_small", "features"), ("densenet121", "features"), ("vgg11", "features")]:
        explainer = Explainer(load_model(name, "none", device="cpu").model)
        assert explainer.layer == expected
        assert explainer(torch.randn(1, 3, 64, 64)).maps.shape == (1, 64, 64)


def test_pixel_methods(resnet18, batch):
    saliency = Explainer(resnet18, method="saliency")(batch, [1, 2])
    assert saliency.maps.shape == saliency.raw.shape == (2, 160, 224)
    # SmoothGrad without noise is the saliency map, averaged over identical copies.
    noiseless = Explainer(resnet18, method="smoothgrad", n=3, sigma=0.0)(batch, [1, 2])
    assert torch.allclose(noiseless.raw, saliency.raw, rtol=1e-4, atol=1e-8)
    noisy = Explainer(resnet18, method="smoothgrad", n=4, sigma=0.2, batch_size=3)
    first, again = noisy(batch, [1, 2]), noisy(batch, [1, 2])
    assert torch.equal(first.maps, again.maps), "seeded noise: the same frame gives the same map"
    assert (first.maps - saliency.maps).abs().mean() > 0.01


def test_bf16_autocast_runs_the_network_in_bf16_and_the_maps_in_fp32(resnet18, batch):
    fp32 = Explainer(resnet18, layer="layer3")(batch)
    bf16_explainer = Explainer(resnet18, layer="layer3", precision="bf16")
    assert bf16_explainer.precision == "bf16"
    bf16 = bf16_explainer(batch)
    assert bf16.maps.dtype == bf16.logits.dtype == torch.float32
    correlation = torch.corrcoef(torch.stack([fp32.maps.flatten(), bf16.maps.flatten()]))[0, 1]
    assert correlation > 0.9


def test_auto_precision_is_bf16_on_cpus_with_bf16_instructions_and_fp32_elsewhere(resnet18, monkeypatch):
    assert Explainer(resnet18).precision == "fp32"  # conftest: a CPU without bf16
    monkeypatch.setattr(plan, "cpu_has_bf16", lambda: True)
    assert Explainer(resnet18).precision == "bf16"
    assert real_cpu_has_bf16() in (True, False)  # the real check runs on this CPU, on any torch


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="reads the CPU's flags from Linux's /proc/cpuinfo")
def test_bf16_check_of_older_torch_agrees_with_torchs_own(monkeypatch):
    """Older torch (2.4) lacks torch.cpu's bf16 checks; streamcam then reads the CPU's flags, and must
    reach the same answer (on this CPU, whichever it is)."""
    with_torchs_checks = real_cpu_has_bf16()
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert real_cpu_has_bf16() == with_torchs_checks


def test_flat_and_nan_maps_become_zeros():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.fill_(1.0)  # constant activations: a flat map
    result = Explainer(model)(torch.randn(2, 3, 16, 16))
    assert torch.equal(result.maps, torch.zeros(2, 16, 16))
    with torch.no_grad():
        model[0].bias.fill_(float("nan"))
    result = Explainer(model)(torch.randn(2, 3, 16, 16))
    assert not result.maps.isnan().any()


def test_receptive_field_alignment_puts_cells_at_their_centres():
    from streamcam.cam.cells import CellCentres
    from streamcam.cam.maps import normalize_maps

    raw = torch.zeros(1, 1, 5, 7)
    raw[0, 0, 2, 3] = 1.0  # one hot cell
    image = normalize_maps(raw, (160, 224))[0, 0]
    receptive = normalize_maps(raw, (160, 224), CellCentres((0.0, 0.0)))[0, 0]  # ResNet's: no offset
    # pytorch-grad-cam's reading: the cell covers pixels 96..127, centred at 111.5 (x) and 79.5 (y).
    assert image.argmax() // 224 in (79, 80) and image.argmax() % 224 in (111, 112)
    # Its receptive field is centred on pixel 32 * 3 = 96 (x), 32 * 2 = 64 (y): half a cell up and left.
    assert divmod(int(receptive.argmax()), 224) == (64, 96)
    assert receptive[64, 96] == 1 and receptive[0, 0] == 0


def test_alignment_option_is_validated_and_changes_only_layer_maps(resnet18, batch):
    with pytest.raises(StreamcamError, match="unknown alignment 'center'"):
        Explainer(resnet18, align="center")
    image = Explainer(resnet18)(batch)
    receptive = Explainer(resnet18, align="receptive-field")(batch)
    assert torch.equal(image.raw, receptive.raw) and not torch.allclose(image.maps, receptive.maps)
    saliency = Explainer(resnet18, method="saliency", align="receptive-field")(batch)
    assert torch.allclose(saliency.maps, Explainer(resnet18, method="saliency")(batch).maps)


def test_compiled_forward_gives_the_eager_maps_and_refuses_where_it_cannot_help(resnets, batch):
    model = resnets["resnet18"]
    eager = Explainer(model)(batch)
    explainer = Explainer(model, compile=True)
    compiled = explainer(batch)
    assert torch.equal(compiled.targets, eager.targets)
    assert torch.allclose(compiled.maps, eager.maps, atol=1e-4) and torch.allclose(compiled.logits, eager.logits, atol=1e-4)
    smaller = explainer(batch[1:])  # padded to the compiled batch size
    assert torch.allclose(smaller.maps, eager.maps[1:], atol=1e-4)
    with pytest.raises(StreamcamError, match="--compile speeds up explanations without a backward pass"):
        Explainer(model, layer="layer3", compile=True)


def test_cuda_graph_state_is_set_up_in_every_explain_thread():
    """Each run explains in a new thread; torch before 2.14 sets CUDA graphs' thread-local state up only in
    the thread that imported them, and a compiled run in any other thread failed an assertion."""
    from torch._inductor import cudagraph_trees

    from streamcam.cam.compiled import cuda_graph_state_in_this_thread

    outcome = []

    def explain_thread():
        cuda_graph_state_in_this_thread()
        outcome.append(cudagraph_trees.get_container(0))  # what a CUDA-graph replay asks for first

    thread = threading.Thread(target=explain_thread)
    thread.start()
    thread.join()
    assert len(outcome) == 1 and isinstance(outcome[0], cudagraph_trees.TreeManagerContainer)
