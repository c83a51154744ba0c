"""NVlabs stylegan2-ada-pytorch snapshots written in the tests, byte for byte the way their
training loop's pickle.dump writes them, without their source tree.

Each network becomes a torch_utils.persistence record: it pickles by reference to
``torch_utils.persistence._reconstruct_persistent_obj`` with meta = {type 'class', version 6,
module_src, class_name, state}; state is the module's __dict__ with its children as records, its
constructor arguments as a dnnlib EasyDict and NVlabs' numpy float64 gains. The fake torch_utils
and dnnlib modules exist in sys.modules only while the pickle is written (pickle checks that a
global it names resolves to the object it pickles), so a loader that tried to import them, or to
run module_src (which would write `marker`), is caught by the tests.
"""

import collections
import contextlib
import io
import pickle
import sys
import types

import numpy as np
import torch

FAKE_PACKAGES = ("torch_utils", "dnnlib")
PLAIN = (bool, int, float, str, type(None), list, tuple, set, dict)  # module attributes a snapshot keeps


class EasyDict(dict):
    """dnnlib.util.EasyDict: a dict whose items read as attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value


def _reconstruct_persistent_obj(meta):  # what NVlabs' version does: exec module_src
    exec(meta["module_src"], {})
    raise AssertionError("a persistence record was reconstructed by running its source")


class Network:
    """dnnlib.tflib.network.Network, TensorFlow-era StyleGAN2's (pickled with its state)."""

    def __init__(self, name, build_module_src):
        self.state = dict(version=4, name=name, static_kwargs={}, components={}, build_module_src=build_module_src,
                          build_func_name=f"{name}_main", variables=[("weight", np.ones((2, 2), np.float32))])

    def __getstate__(self):
        return self.state


@contextlib.contextmanager
def fake_nvlabs_modules():
    """torch_utils.persistence and dnnlib (util, tflib.network) in sys.modules, removed on exit."""
    modules = {name: types.ModuleType(name) for name in ("torch_utils", "torch_utils.persistence", "dnnlib",
                                                         "dnnlib.util", "dnnlib.tflib", "dnnlib.tflib.network")}
    for function, module in ((_reconstruct_persistent_obj, "torch_utils.persistence"), (EasyDict, "dnnlib.util"),
                             (Network, "dnnlib.tflib.network")):
        function.__module__ = module
        setattr(modules[module], function.__name__, function)
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name in modules:
            del sys.modules[name]


class _Persistent:
    def __init__(self, meta):
        self.meta = meta

    def __reduce__(self):
        return _reconstruct_persistent_obj, (self.meta,)


def record(module: torch.nn.Module, module_src: str, init_kwargs: dict | None = None, version: int = 6):
    """module as a persistence record (children too); init_kwargs default to module.init_kwargs."""
    state = {k: v for k, v in vars(module).items() if isinstance(v, PLAIN) and k != "init_kwargs"}
    state.update({k: np.float64(v) for k, v in state.items() if k.endswith("_gain")})  # numpy, as NVlabs'
    state["_parameters"] = collections.OrderedDict(module._parameters)
    state["_buffers"] = collections.OrderedDict(module._buffers)
    state["_modules"] = collections.OrderedDict(
        (name, record(child, module_src, {}, version)) for name, child in module._modules.items())
    kwargs = getattr(module, "init_kwargs", {}) if init_kwargs is None else init_kwargs
    state["_init_args"], state["_init_kwargs"] = (), _easy(kwargs)
    return _Persistent(dict(type="class", version=version, module_src=module_src, class_name=type(module).__name__,
                            state=state))


def _easy(value):
    return EasyDict({k: _easy(v) for k, v in value.items()}) if isinstance(value, dict) else value


def marker_source(marker) -> str:
    """module_src that writes `marker` when executed, as the first thing it does."""
    return f"open({str(marker)!r}, 'w').write('executed')\nimport torch_utils.persistence\n"


def snapshot_bytes(contents, protocol: int = 4, storages: str = "legacy") -> bytes:
    """pickle.dump of `contents` (records made by record()); storages pickle as
    torch.storage._load_from_bytes of a torch.save blob, "legacy" (torch 1.7's, NVlabs' files)
    or "zip" (today's torch.save format)."""
    with fake_nvlabs_modules():
        buffer = io.BytesIO()
        _StoragePickler(buffer, protocol, storages).dump(contents)
    return buffer.getvalue()


class _StoragePickler(pickle.Pickler):
    def __init__(self, file, protocol: int, storages: str):
        super().__init__(file, protocol=protocol)
        self.zip_storages = {"legacy": False, "zip": True}[storages]

    def reducer_override(self, obj):
        if not isinstance(obj, torch.storage.TypedStorage):
            return NotImplemented
        blob = io.BytesIO()
        torch.save(obj, blob, _use_new_zipfile_serialization=self.zip_storages)
        return torch.storage._load_from_bytes, (blob.getvalue(),)


def write_snapshot(path, networks: dict, marker, protocol: int = 4, storages: str = "legacy", version: int = 6):
    """An NVlabs snapshot of `networks` (name -> culturegan StyleGAN2 module) at path."""
    source = marker_source(marker)
    contents = {name: record(module, source, version=version) for name, module in networks.items()}
    contents.update(augment_pipe=None, training_set_kwargs=dict(class_name="training.dataset.ImageFolderDataset",
                                                                path="/data/faces.zip", resolution=16))
    path.write_bytes(snapshot_bytes(contents, protocol, storages))
    return path


class _ForbiddenImports:
    """A meta-path finder that fails on any import of NVlabs' packages."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in FAKE_PACKAGES:
            raise AssertionError(f"the loader imported {name}")
        return None


@contextlib.contextmanager
def forbid_nvlabs_imports():
    """Fails on any import of torch_utils or dnnlib inside the block, and checks none is loaded after."""
    finder = _ForbiddenImports()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
    assert not [name for name in sys.modules if name.split(".")[0] in FAKE_PACKAGES]
