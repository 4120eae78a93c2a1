"""Every built-in search space exports: each preset (at a small input size, 10 classes), the variants
that switch on auxiliary heads, and random assignments, exported as standalone Python, loaded in one
fresh interpreter where graphnas is not importable, with the built model's weights read from a file
with weights_only=True, give the built model's outputs (evaluation mode; also training mode with the
auxiliary outputs where a network has them) and parameter count. TorchScript and ONNX are checked on
each space's smallest networks (ONNX export takes seconds per network).

Spaces are found with `nas.list_spaces()`; one that fails to import is skipped with the reason.
"""

import functools
import random

import numpy as np
import pytest
import torch

import nas
from nas.export import export, python_source
from nas.export.formats import onnx_input_names
from nas.export.verify import FreshInterpreter, reference_outputs
from nas.graph import ArchitectureError, aux_nodes, input_shapes

TOL = 1e-5
IMAGE_SIDES = (64, 75, 96, 128)  # presets of RGB image networks are built at the first side that fits
SMALL_CLIP = (3, 8, 64, 64)  # presets of RGB video networks are built at this clip size
RANDOM_SEEDS = (0, 1, 2)


def _space(name: str) -> nas.SearchSpace:
    try:
        return nas.get_space(name)
    except Exception as e:
        pytest.skip(f"space {name!r} fails to import: {type(e).__name__}: {e}")


def _small_preset(space: nas.SearchSpace, preset: str, **options) -> nas.ArchGraph:
    shape = space.presets[preset].input_shape
    if shape is not None and len(shape) == 4 and shape[0] == 3:
        return space.graph(preset=preset, num_classes=10, input_shape=SMALL_CLIP, **options)
    if shape is None or len(shape) != 3 or shape[0] != 3:
        return space.graph(preset=preset, num_classes=10, **options)
    errors = []
    for side in IMAGE_SIDES:
        try:
            return space.graph(preset=preset, num_classes=10, input_shape=(3, side, side), **options)
        except ArchitectureError as e:
            errors.append(f"{side}: {e}")
    raise AssertionError(f"preset {preset!r} builds at none of the sides {IMAGE_SIDES}: {errors}")


def _aux_options(space: nas.SearchSpace) -> list[str]:
    """Boolean options (off by default) that add auxiliary heads, e.g. inception's aux_logits."""
    found = []
    for key, default in space.options.items():
        if default is False and space.presets:
            first = next(iter(space.presets))
            if aux_nodes(_small_preset(space, first, **{key: True})):
                found.append(key)
    return found


def _local_structure(g: nas.ArchGraph) -> set:
    """Each node as what export writes for it: its op and hyperparameters, the ops it reads and how it merges
    them (the depth of a stage or the order of the blocks adds nothing here)."""
    def frozen(value):
        return tuple(map(frozen, value)) if isinstance(value, list | tuple) else value

    out = set()
    for v, d in g.nodes(data=True):
        params = tuple(sorted((k, frozen(x)) for k, x in (d.get("params") or {}).items()))
        inputs = tuple(sorted(str(g.nodes[u].get("op")) for u in g.predecessors(v)))
        out.add((d.get("op"), params, inputs, str(d.get("merge"))))
    return out


def _new_structure(cases: list[tuple[str, nas.ArchGraph]]) -> list[tuple[str, nas.ArchGraph]]:
    """The cases, in order, that each have a node unlike every earlier case's (`_local_structure`): the other
    presets differ from those only in depth or in the order of the same blocks (e.g. vgg13/16/19 beside vgg11;
    resnet101/152 beside resnet50), so exporting them would repeat what is checked, at 60-140 M parameters each."""
    seen: set = set()
    kept = []
    for label, g in cases:
        nodes = _local_structure(g)
        if nodes - seen:
            kept.append((label, g))
            seen |= nodes
    return kept


@functools.cache
def _cases(name: str) -> tuple[tuple[str, nas.ArchGraph], ...]:
    space = nas.get_space(name)
    presets = [(f"preset {p}", _small_preset(space, p)) for p in space.presets]
    for key in _aux_options(space):
        presets += [(f"preset {p} with {key}", _small_preset(space, p, **{key: True})) for p in space.presets]
    out = _new_structure(presets)
    for seed in RANDOM_SEEDS:
        out.append((f"random seed {seed}", space.graph(space.sample(random.Random(seed)), num_classes=10)))
    return tuple(out)


def cases(name: str) -> list[tuple[str, nas.ArchGraph]]:
    """(label, graph) of every network the tests export for space `name` (skips if it fails to import)."""
    _space(name)
    return list(_cases(name))


def _inputs(g: nas.ArchGraph, batch: int, seed: int) -> tuple[torch.Tensor, ...]:
    """A random batch for every input of `g` (boxes too: ROI pooling takes any numbers)."""
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn((batch, *shape), generator=gen) for shape in input_shapes(g))


def _randomise_bn(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    with FreshInterpreter(tmp_path_factory.mktemp("fresh")) as interpreter:
        assert interpreter.hello["graphnas_importable"] == [], interpreter.hello
        yield interpreter


@pytest.mark.parametrize("name", nas.list_spaces())
def test_space_exports_match_the_builder_in_a_fresh_interpreter(name, fresh, tmp_path):
    todo = cases(name)
    failures, pending, checked = [], [], 0

    def collect():
        label, g, folder = pending.pop(0)
        r = fresh.result()
        for f in folder.iterdir():  # big presets: keep one network's files on disk at a time
            f.unlink()
        why = []
        if "error" in r:
            why.append(r["error"])
        else:
            if r["imports_graphnas"]:
                why.append(f"imported {r['imports_graphnas']}")
            if not r["keys_equal"]:
                why.append("state_dict keys differ")
            if r["params"] != nas.count_params(g):
                why.append(f"params {r['params']} != {nas.count_params(g)}")
            if r["eval_diff"] is None or r["eval_diff"] > TOL:
                why.append(f"eval max |diff| {r['eval_diff']}")
            if r["aux_in_eval"]:
                why.append("auxiliary outputs in evaluation mode")
            if aux_nodes(g) and not (r["train_diff"] <= TOL and r["aux_diff"] <= TOL and r["aux_count"] >= 1):
                why.append(f"training mode: {r}")
        if why:
            failures.append(f"{name} {label}: {'; '.join(why)}")

    for i, (label, g) in enumerate(todo):
        folder = tmp_path / f"case{i}"
        folder.mkdir()
        torch.manual_seed(i)
        model = nas.build(g)
        _randomise_bn(model, i)
        files = export(g, "python", folder / "net.py", weights=model)
        x = _inputs(g, 2, i)
        torch.save(reference_outputs(model, x, training=bool(aux_nodes(g))), folder / "ref.pt")
        del model
        fresh.submit(id=f"{name}-{i}", model=files[0], weights=files[1], reference=folder / "ref.pt")
        pending.append((label, g, folder))
        if len(pending) > 1:  # the fresh interpreter checks one network while this process builds the next
            collect()
            checked += 1
    while pending:
        collect()
        checked += 1
    assert checked == len(todo)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("name", nas.list_spaces())
def test_space_source_is_deterministic(name):
    for label, g in cases(name)[:1] + cases(name)[-1:]:
        first = python_source(g)
        assert python_source(nas.from_json(nas.to_json(g))) == first, label
        assert "import nas" not in first and "graphnas" not in first.split("import torch")[1], label


# spaces whose depth is an option: their TorchScript and ONNX checks export a shallow network of the same ops (the
# cells repeat; the exporters take time per node: darts' ONNX export 27 s at 8 cells)
SHALLOW = {"darts": {"layers": 3}, "nb201": {"N": 1}}


def _smallest(todo: list[tuple[str, nas.ArchGraph]], prefix: str = "") -> tuple[str, nas.ArchGraph]:
    chosen = [c for c in todo if c[0].startswith(prefix)] or todo
    return min(chosen, key=lambda c: (c[1].number_of_nodes(), c[0]))


def _format_cases(name: str) -> list[tuple[str, nas.ArchGraph]]:
    """The networks the TorchScript and ONNX checks choose from: the space's cases, or shallow random ones."""
    if name not in SHALLOW:
        return cases(name)
    space = _space(name)
    return [(f"random seed {seed} with {SHALLOW[name]}",
             space.graph(space.sample(random.Random(seed)), num_classes=10, **SHALLOW[name])) for seed in RANDOM_SEEDS]


def _check_format(name: str, fmt: str, label: str, g: nas.ArchGraph, folder) -> None:
    torch.manual_seed(0)
    model = nas.build(g)
    _randomise_bn(model, 0)
    path = folder / f"{fmt}-{label.replace(' ', '_')}.{'pt' if fmt == 'torchscript' else 'onnx'}"
    export(g, fmt, path, weights=model)
    x = _inputs(g, 3, 1)
    with torch.no_grad():
        want = model.eval()(*x)
        if fmt == "torchscript":
            got = torch.jit.load(str(path))(*x)
        else:
            import onnxruntime as ort

            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            feed = {name: v.numpy() for name, v in zip(onnx_input_names(g), x, strict=True)}
            got = torch.from_numpy(np.asarray(session.run(None, feed)[0]))
    diff = (got - want).abs().max().item()
    assert got.shape == want.shape and diff <= TOL, f"{name} {label} {fmt}: max |diff| {diff}"


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("name", nas.list_spaces())
def test_space_torchscript_matches_the_builder(name, tmp_path):
    """The smallest preset, and the smallest network with auxiliary heads where the space has them."""
    todo = _format_cases(name)
    chosen = [_smallest(todo, "preset")]
    with_aux = [c for c in todo if aux_nodes(c[1])]
    if with_aux:
        chosen.append(_smallest(with_aux))
    for label, g in chosen:
        _check_format(name, "torchscript", label, g, tmp_path)


@pytest.mark.parametrize("name", nas.list_spaces())
def test_space_onnx_matches_the_builder(name, tmp_path):
    """The space's smallest network (ONNX export takes seconds per network)."""
    for mod in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(mod)
    todo = _format_cases(name)
    label, g = _smallest(todo)
    _check_format(name, "onnx", label, g, tmp_path)
