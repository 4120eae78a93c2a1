"""The spaces of issue 20: vgg_stn and with_stn (the spatial transformer as an op choice of any space),
siamese (one branch, shared), fcn (FCN-32s/16s/8s fusion; fully convolutional: trained at one size, it
segments larger images) and detection (Fast R-CNN over given proposals)."""

from __future__ import annotations

import pytest
import torch

import nas
from nas.graph import ArchitectureError, ordered_inputs, subgraphs
from nas.space import SpaceError
from nas.tasks import segmentation
from search_spaces.stn import with_stn
from workers.data.generated import generate


def test_with_stn_gives_any_space_the_op_choice():
    resnet = nas.get_space("resnet")
    space = with_stn(resnet, after="input")
    assert space.names == [*resnet.names, "stn"] and space.variable("stn").op_choice
    base = resnet.graph({}, partial=True)
    for value, op in (("identity", "identity"), ("stn", "stn")):
        g = space.graph({"stn": value}, partial=True)
        assert g.nodes["stn"]["op"] == op and g.nodes["stn"]["choice"] == "stn"
        assert ordered_inputs(g, "stn") == ["input"]
        assert {v for v in g.successors("stn")} == set(base.successors("input"))  # it feeds what the input fed
    assert nas.count_params(space.graph({"stn": "identity"}, partial=True)) == nas.count_params(base)
    # resnet's presets come along with the transformer off
    assert space.graph(preset="resnet18").nodes["stn"]["op"] == "identity"
    with pytest.raises(SpaceError, match="after node 'nowhere', which this architecture lacks"):
        with_stn(resnet, after="nowhere").graph({}, partial=True)
    with pytest.raises(SpaceError, match="already has a variable 'stn'"):
        with_stn(space)


def test_vgg_stn_presets_differ_by_the_transformer_only():
    space = nas.get_space("vgg_stn")
    plain, stn = space.graph(preset="rts_cnn"), space.graph(preset="rts_cnn_stn")
    assert set(plain.nodes) == set(stn.nodes) and plain.nodes["stn"]["op"] == "identity"
    extra = nas.count_params(stn) - nas.count_params(plain)
    assert extra == nas.count_params(nas.graph.from_dict({
        "format": "graphnas.arch/1", "directed": True, "multigraph": False, "graph": {"input_shape": [1, 32, 32]},
        "nodes": [{"id": "input", "op": "input", "params": {}},
                  {"id": "stn", "op": "stn", "params": {"downsample": 2}}],
        "edges": [{"source": "input", "target": "stn", "order": 0}]}))
    assert [v.name for v in space.op_choices] == ["stn"]


def test_siamese_branches_share_one_set_of_weights():
    space = nas.get_space("siamese")
    g = space.graph(preset="sint_small")
    assert set(subgraphs(g)) == {"branch"} and nas.infer_shapes(g)["embeddings"] == (64,)
    model = nas.build(g).eval()
    x = torch.randn(3, 1, 16, 16)
    out = model(x, x)
    torch.testing.assert_close(out[:, :32], out[:, 32:])
    torch.testing.assert_close(out[:, :32].norm(dim=1), torch.ones(3))  # l2_normalize
    assert nas.count_params(g) == nas.count_params(subgraphs(g)["branch"])
    with pytest.raises(SpaceError, match="variable 'stages' = 3 .* needs sides >= 8"):
        space.graph({"stages": 3}, partial=True, input_shape=(1, 6, 6))


@pytest.mark.parametrize("fusion, skips", [("32s", []), ("16s", ["score_pool2"]),
                                           ("8s", ["score_pool2", "score_pool1"])])
def test_fcn_fusion_adds_the_skips(fusion, skips):
    g = nas.get_space("fcn").graph({"fusion": fusion, "stages": 3}, partial=True)
    assert sorted(n for n in g if n.startswith("score_pool")) == sorted(skips)
    assert nas.infer_shapes(g)["upscore"] == (11, 32, 32)
    factor = {"32s": 8, "16s": 4, "8s": 2}[fusion]
    assert g.nodes["upscore"]["params"]["stride"] == factor and g.nodes["upscore"]["op"] == "conv_transpose"
    bilinear = nas.get_space("fcn").graph({"fusion": fusion, "upsampling": "bilinear"}, partial=True)
    assert bilinear.nodes["upscore"]["op"] == "upsample" and nas.infer_shapes(bilinear)["upscore"] == (11, 32, 32)
    with pytest.raises(SpaceError, match="needs input sides divisible by 8"):
        nas.get_space("fcn").graph({"stages": 3}, partial=True, input_shape=(1, 36, 36))


def test_an_fcn_trained_at_32_pixels_segments_64_pixel_images():
    """Fully convolutional: the same weights build at a larger input (same state dict) and the module trained
    at 32x32 runs on 64x64 canvases with twice the digits, scoring well above predicting background."""
    torch.manual_seed(0)
    space = nas.get_space("fcn")
    a = {"stages": 3, "width": 8, "head_width": 16, "head_kernel": 3, "fusion": "8s"}
    small, large = space.graph(a, partial=True), space.graph(a, partial=True, input_shape=(1, 64, 64))
    model = nas.build(small)
    train = generate("digit_segmentation:images=256,seed=1")
    x, mask = torch.from_numpy(train["x"]).float() / 255, torch.from_numpy(train["mask"]).long()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(80):
        i = torch.randint(0, 256, (16,))
        loss = segmentation.pixel_cross_entropy(model(x[i]), mask[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    big = generate("digit_segmentation:images=24,side=64,max_digits=6,seed=2")
    xb, mb = torch.from_numpy(big["x"]).float() / 255, torch.from_numpy(big["mask"]).long()
    rebuilt = nas.build(large)
    rebuilt.load_state_dict(model.state_dict())  # the same keys and shapes at 64x64
    model.eval()
    rebuilt.eval()
    with torch.no_grad():
        out = model(xb)
        torch.testing.assert_close(rebuilt(xb), out)
    assert out.shape == (24, 11, 64, 64)
    conf = segmentation.confusion_matrix(out, mb, 11)
    background = segmentation.confusion_matrix(torch.zeros_like(out).index_fill_(1, torch.tensor([0]), 1.0), mb, 11)
    fg = conf[1:, 1:].sum() / conf[1:].sum()  # digit pixels called some digit
    assert float(fg) > 0.5 and segmentation.mean_iou(conf) > 1.5 * segmentation.mean_iou(background)


def test_detection_pools_the_proposals_at_the_backbones_stride():
    space = nas.get_space("detection")
    g = space.graph({"stages": 4, "roi_size": 2}, partial=True, proposals=5)
    assert nas.graph.input_shapes(g) == [(1, 48, 48), (5, 4)]
    assert g.nodes["roi_pool"]["params"]["stride"] == 8 and ordered_inputs(g, "roi_pool")[1] == "proposals"
    assert nas.infer_shapes(g)["roi_pool"] == (128, 5, 2, 2) and nas.infer_shapes(g)["detections"] == (51, 5, 1, 1)
    model = nas.build(g).eval()
    boxes = torch.tensor([[[0.0, 0, 16, 16], [8, 8, 40, 40], [0, 0, 48, 48], [30, 2, 46, 20], [5, 5, 6, 6]]])
    with torch.no_grad():
        out = model(torch.rand(1, 1, 48, 48), boxes)
        again = model(torch.rand(1, 1, 48, 48).expand(1, 1, 48, 48), boxes.flip(1))
    assert out.shape == (1, 51, 5, 1, 1) and again.shape == out.shape
    with pytest.raises(SpaceError, match="option 'proposals' must be an int >= 1"):
        space.graph({}, partial=True, proposals=0)
    with pytest.raises(SpaceError, match="needs image sides divisible by 4"):
        space.graph({"stages": 3}, partial=True, input_shape=(1, 30, 30))
    with pytest.raises(ArchitectureError):
        g.add_subgraph("x", g)
