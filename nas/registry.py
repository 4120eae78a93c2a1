"""Where search spaces are found: built-ins, `register_space`, the `graphnas.search_spaces` entry point
group, and import references (``package.module:name`` or ``path/to/file.py:name``).

A registered object is a `SearchSpace` or a zero-argument callable returning one; built-ins are
imported only when asked for, so listing spaces stays fast.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from nas.space import SearchSpace, SpaceError

ENTRY_POINT_GROUP = "graphnas.search_spaces"

BUILTIN_SPACES: dict[str, str] = {
    "vgg": "search_spaces.vgg:vgg_space",
    "inception": "search_spaces.inception:inception_space",
    "resnet": "search_spaces.resnet:resnet_space",
    "densenet": "search_spaces.densenet:densenet_space",
    "highway": "search_spaces.highway:highway_space",
    "darts": "search_spaces.darts:darts_space",
    "nb201": "search_spaces.nb201:nb201_space",
    "timeception": "search_spaces.timeception:timeception_space",
    "video": "search_spaces.video:video_space",
    "vgg_stn": "search_spaces.stn:vgg_stn_space",
    "siamese": "search_spaces.siamese:siamese_space",
    "fcn": "search_spaces.fcn:fcn_space",
    "detection": "search_spaces.detection:detection_space",
}

_registered: dict[str, Any] = {}
_cache: dict[str, SearchSpace] = {}


def register_space(name: str, space: SearchSpace | Callable[[], SearchSpace] | str) -> None:
    """Make `space` available under `name` (a space, a factory, or a 'module:attr' reference)."""
    _registered[name] = space
    _cache.pop(name, None)


def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def list_spaces() -> list[str]:
    return sorted(set(BUILTIN_SPACES) | set(_registered) | set(_entry_points()))


def _materialise(obj: Any, where: str) -> SearchSpace:
    if isinstance(obj, SearchSpace):
        return obj
    if callable(obj):
        try:
            obj = obj()
        except Exception as e:
            raise SpaceError(f"search space plug-in {where}: calling it raised {type(e).__name__}: {e}") from e
        if isinstance(obj, SearchSpace):
            return obj
    raise SpaceError(f"search space plug-in {where}: expected a nas.SearchSpace or a function returning one, "
                     f"got {type(obj).__name__}")


def _import_reference(ref: str) -> Any:
    """Resolve 'package.module:attr' or 'path/to/file.py:attr'."""
    if ":" not in ref:
        raise SpaceError(f"search space reference {ref!r} must look like 'package.module:name' or 'file.py:name'")
    target, attr = ref.rsplit(":", 1)
    try:
        if target.endswith(".py"):
            path = Path(target)
            if not path.is_file():
                raise SpaceError(f"search space plug-in {ref!r}: file {path} does not exist")
            mod_name = f"graphnas_user_space_{abs(hash(str(path.resolve())))}"
            spec = importlib.util.spec_from_file_location(mod_name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except SpaceError:
        raise
    except Exception as e:
        raise SpaceError(f"search space plug-in {ref!r}: importing {target!r} failed: {type(e).__name__}: {e}") from e
    try:
        return getattr(module, attr)
    except AttributeError:
        raise SpaceError(f"search space plug-in {ref!r}: module {target!r} has no attribute {attr!r}") from None


def get_space(name: str) -> SearchSpace:
    """A space by registered name, entry point, or import reference."""
    if name in _cache:
        return _cache[name]
    if name in _registered:
        obj = _registered[name]
        space = _materialise(_import_reference(obj) if isinstance(obj, str) else obj, repr(name))
    elif name in BUILTIN_SPACES:
        space = _materialise(_import_reference(BUILTIN_SPACES[name]), repr(name))
    elif name in (eps := _entry_points()):
        try:
            obj = eps[name].load()
        except Exception as e:
            raise SpaceError(f"search space plug-in {name!r} (entry point {eps[name].value!r}): loading failed: "
                             f"{type(e).__name__}: {e}") from e
        space = _materialise(obj, f"{name!r} (entry point {eps[name].value!r})")
    elif ":" in name:
        space = _materialise(_import_reference(name), repr(name))
    else:
        raise SpaceError(f"unknown search space {name!r}; known: {', '.join(list_spaces())} "
                         "(or give 'package.module:name' / 'file.py:name')")
    _cache[name] = space
    return space
