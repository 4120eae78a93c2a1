"""The Timeception space: the authors' parameter count, the same outputs as an independently written
Timeception layer, variables and their errors, the op choice DARTS relaxes."""

import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nas
from nas.darts.supernet import build_supernet
from nas.graph import ArchGraph
from nas.space import SpaceError
from search_spaces.timeception import branch_channels, timeception_layer


@pytest.fixture(scope="module")
def space():
    return nas.get_space("timeception")


def _tc_params(g) -> int:
    with torch.device("meta"):
        model = nas.build(g)
    return sum(p.numel() for n, p in model.named_parameters() if n.startswith("tc"))


def test_tc4_i3d_has_the_authors_parameter_count(space):
    g = space.graph(preset="tc4_i3d")
    assert _tc_params(g) == 1_488_416  # the authors' PyTorch Timeception module, 4 layers on 1024 channels
    assert nas.infer_shapes(g)["tc4_pool"] == (2480, 8, 7, 7)
    alone = ArchGraph((1024, 128, 7, 7))
    x, c = "input", 1024
    for layer in range(1, 5):
        x, c = timeception_layer(alone, f"tc{layer}", x, c, 8, 1.25, "kernels")
    assert c == 2480 and nas.count_params(alone) == 1_488_416
    dilated = space.graph(preset="tc4_i3d_dilated")
    widths = [branch_channels(c, 8, 1.25) for c in (1024, 1280, 1600, 2000)]  # 32, 40, 50, 62
    assert _tc_params(dilated) == 1_488_416 - sum(8 * b * (5 + 7 - 3 - 3) for b in widths)
    assert dilated.nodes["tc1_g1_b4_dw"]["params"]["dilation"] == [3, 1, 1]
    assert _tc_params(space.graph(preset="i3d_avgpool")) == 0


class ReferenceTimeception(nn.Module):
    """Written from the paper and the authors' module, not from graphnas: per group five branches on the
    group's channels (depthwise temporal convs as Conv1d over (N*H*W, C, T)), concat, ReLU, shuffle, pool."""

    def __init__(self, c_in: int, n_layers: int, groups: int, expansion: float, scales):
        super().__init__()
        self.groups, self.layers = groups, []
        for layer in range(1, n_layers + 1):
            b = int(c_in * expansion / (5.0 * groups))
            for gi in range(1, groups + 1):
                for i in range(1, 6):
                    setattr(self, f"tc{layer}_g{gi}_b{i}_conv", nn.Conv3d(c_in // groups, b, 1))
                    setattr(self, f"tc{layer}_g{gi}_b{i}_bn", nn.BatchNorm3d(b))
                    if 2 <= i <= 4:
                        k, d = scales[i - 2]
                        setattr(self, f"tc{layer}_g{gi}_b{i}_dw", nn.Conv1d(b, b, k, dilation=d, groups=b,
                                                                            padding=d * (k - 1) // 2))
            self.layers.append(layer)
            c_in = 5 * groups * b

    def _temporal(self, conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
        n, c, t, h, w = x.shape
        y = conv(x.permute(0, 3, 4, 1, 2).reshape(n * h * w, c, t))
        return y.reshape(n, h, w, c, -1).permute(0, 3, 4, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            per_group = x.shape[1] // self.groups
            outs = []
            for gi in range(1, self.groups + 1):
                xg = x[:, (gi - 1) * per_group:gi * per_group]
                for i in range(1, 6):
                    y = getattr(self, f"tc{layer}_g{gi}_b{i}_conv")(xg)
                    if 2 <= i <= 4:
                        y = self._temporal(getattr(self, f"tc{layer}_g{gi}_b{i}_dw"), y)
                    elif i == 5:
                        y = F.max_pool3d(y, (2, 1, 1), stride=1)
                        y = torch.cat([y[:, :, :1], y], 2)  # the first step repeated
                    outs.append(getattr(self, f"tc{layer}_g{gi}_b{i}_bn")(y))
            y = F.relu(torch.cat(outs, 1))
            n, c = y.shape[:2]
            y = y.view(n, self.groups, c // self.groups, *y.shape[2:]).transpose(1, 2).reshape(y.shape)
            x = F.max_pool3d(y, (2, 1, 1))
        return x


@pytest.mark.parametrize("multiscale", ["kernels", "dilations"])
def test_layers_compute_what_an_independent_implementation_does(space, multiscale):
    a = {"backbone": "none", "n_layers": 2, "groups": 2, "multiscale": multiscale, "expansion": 1.25, "pool": "max"}
    g = space.graph(a, input_shape=(40, 9, 3, 2), num_classes=5)
    torch.manual_seed(0)
    model = nas.build(g)
    scales = ((3, 1), (5, 1), (7, 1)) if multiscale == "kernels" else ((3, 1), (3, 2), (3, 3))
    ref = ReferenceTimeception(40, 2, 2, 1.25, scales)
    ours = {k: v for k, v in model.state_dict().items() if k.startswith("tc")}
    theirs = ref.state_dict()
    assert set(ours) == set(theirs)
    for m in model.modules():  # non-trivial batch-norm statistics
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    ref.load_state_dict({k: v.reshape(theirs[k].shape) for k, v in ours.items()})  # (b, 1, k, 1, 1) -> (b, 1, k)
    x = torch.randn(3, 40, 9, 3, 2)
    model.eval()
    ref.eval()
    with torch.no_grad():
        want = ref(x)
        values = {}
        hook = model.tc2_pool.register_forward_hook(lambda m, i, o: values.setdefault("tc2", o))
        model(x)
        hook.remove()
    assert want.shape == (3, 60, 2, 3, 2)  # b = 5 then 6 per branch; T 9 -> 4 -> 2
    assert torch.allclose(values["tc2"], want, atol=1e-5)


def test_baseline_and_op_choice(space):
    base = space.graph(preset="digits_avgpool")
    assert not [n for n in base.nodes if n.startswith("tc")]
    assert base.nodes["pool"]["op"] == "global_avgpool" and base.nodes["pool"]["choice"] == "pool"
    assert space.graph(preset="digits_tc").nodes["tc2_shuffle"]["params"] == {"groups": 4}
    assert [v.name for v in space.op_choices] == ["pool"]
    net = build_supernet(space, {"n_layers": 1, "groups": 2})
    assert net.nodes == {"pool": ["pool"]} and net.ops["pool"] == ["global_maxpool", "global_avgpool"]
    model = nas.build(net.graph)
    assert model(torch.randn(2, *space.input_shape)).shape == (2, 10)


def test_random_assignments_build_at_the_default_input(space):
    rng = random.Random(0)
    built = 0
    for _ in range(25):
        a = space.sample(rng)
        if a["backbone"] == "none" and a["n_layers"] > 0:
            with pytest.raises(SpaceError, match="'backbone' = 'none' expects backbone features"):
                space.graph(a)
            continue
        g = space.graph(a)
        assert nas.infer_shapes(g)[nas.graph.output_node(g)] == (10,)
        assert nas.arch_id(nas.from_json(nas.to_json(g))) == nas.arch_id(g)
        built += 1
    assert built >= 10


def test_errors_name_the_variable(space):
    with pytest.raises(SpaceError, match="'n_layers' = 4 .* needs T >= 16; the input has T = 8"):
        space.graph({"n_layers": 4}, partial=True, input_shape=(1, 8, 16, 16))
    with pytest.raises(SpaceError, match="'groups' = 8 with 'expansion' = 1.0 does not fit the input of 36"):
        space.graph({"backbone": "none", "groups": 8, "expansion": 1.0}, partial=True, input_shape=(36, 8, 2, 2))
    with pytest.raises(SpaceError, match=r"video input \(C, T, H, W\)"):
        space.graph(partial=True, input_shape=(1, 8, 8))
    with pytest.raises(SpaceError, match="option 'hidden'"):
        space.graph(partial=True, hidden=-1)
