"""NVlabs stylegan2-ada-pytorch snapshots: read as data by an allow-list unpickler that never
imports NVlabs' packages nor runs the source a snapshot carries (checked with a meta-path hook
and a module_src that would write a file), every other pickle refused by what it holds, and the
StyleGAN2 networks rebuilt from them (load_generator, load_discriminator, convert) computing
exactly what the pickled networks compute."""

import collections
import io
import json
import os
import pickle
import pickletools
import random
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from nvlabs_snapshots import (Network, fake_nvlabs_modules, forbid_nvlabs_imports, marker_source, record,
                              snapshot_bytes, write_snapshot)
from safetensors.torch import save_file

from culturegan import cli
from culturegan.models import convert, load_discriminator, load_generator
from culturegan.models.loading import StyleGAN2Architecture, load_run
from culturegan.models.nvlabs_pickle import ALLOWED_GLOBALS, read_snapshot
from culturegan.models.stylegan2 import Discriminator, Generator

G_KWARGS = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, mapping_kwargs={"num_layers": 2},
                synthesis_kwargs={"channel_base": 64, "channel_max": 16})
D_KWARGS = dict(c_dim=0, img_resolution=16, img_channels=3, channel_base=64, channel_max=16)
LEGACY_MAGIC = b"\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."  # torch.save's legacy header (the pickled magic number)
ZIP_MAGIC = b"PK\x03\x04"


def network(cls, seed, **kwargs):
    """A network with every tensor random (NVlabs' zero-initialised noise strengths and biases too,
    so that a tensor loaded in the wrong place changes the output)."""
    torch.manual_seed(seed)
    module = cls(**kwargs).eval()
    with torch.no_grad():
        for tensor in module.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.randn_like(tensor) * 0.1)
    return module


@pytest.fixture(scope="module")
def networks():
    return {"G": network(Generator, 1, **G_KWARGS), "D": network(Discriminator, 2, **D_KWARGS),
            "G_ema": network(Generator, 3, **G_KWARGS)}


@pytest.fixture(scope="module")
def snapshot(networks, tmp_path_factory):
    folder = tmp_path_factory.mktemp("snapshot")
    return write_snapshot(folder / "network-snapshot-000040.pkl", networks, folder / "executed")


def images(generator, seed=0):
    z = torch.randn(3, generator.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return generator(z, None, truncation_psi=0.7, noise_mode="const")


def logits(discriminator, seed=0):
    img = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return discriminator(img, None)


def stream_globals(data: bytes) -> set[tuple[str, str]]:
    """The globals a protocol <= 3 pickle names (each a GLOBAL opcode "module name")."""
    return {tuple(arg.split(" ")) for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}


# ------------------------------------------------------------------------------ reading safely

@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_snapshot_reads_as_data_without_nvlabs_code(networks, tmp_path, protocol):
    marker = tmp_path / "executed"
    path = write_snapshot(tmp_path / "snapshot.pkl", networks, marker, protocol)
    if protocol >= 3:  # (protocol 2 pickles bytes as latin-1 text)
        assert LEGACY_MAGIC in path.read_bytes()
    with forbid_nvlabs_imports():
        read = read_snapshot(path)
    assert not marker.exists()
    assert sorted(read) == ["D", "G", "G_ema"]  # augment_pipe None and training_set_kwargs are no networks
    for name, module in networks.items():
        assert read[name].class_name == type(module).__name__
        assert read[name].init_kwargs == module.init_kwargs
        expected = module.state_dict()
        assert sorted(read[name].state_dict) == sorted(expected)
        for key, tensor in expected.items():
            assert read[name].state_dict[key].dtype == tensor.dtype
            assert torch.equal(read[name].state_dict[key], tensor), key


def test_snapshot_stream_names_only_allowed_globals(networks, tmp_path):
    data = snapshot_bytes({"G": record(networks["G"], marker_source(tmp_path / "executed"))}, protocol=3)
    numpy_scalar = np.float64(0).__reduce__()[0]  # numpy._core.multiarray's in numpy 2, numpy.core's in 1
    assert stream_globals(data) == {
        ("torch_utils.persistence", "_reconstruct_persistent_obj"), ("dnnlib.util", "EasyDict"),
        ("collections", "OrderedDict"), ("builtins", "set"), ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_parameter"), ("torch.storage", "_load_from_bytes"), ("numpy", "dtype"),
        (numpy_scalar.__module__, numpy_scalar.__name__)}
    assert stream_globals(data) <= set(ALLOWED_GLOBALS)
    assert {("numpy._core.multiarray", "scalar"), ("numpy.core.multiarray", "scalar")} <= ALLOWED_GLOBALS


@pytest.mark.parametrize("module, name", [("os", "system"), ("builtins", "eval"), ("torch", "load"),
                                          ("torch_utils.persistence", "persistent_class")])
def test_a_global_outside_the_allow_list_is_refused_by_name(tmp_path, module, name):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pkl"
    path.write_bytes(f"c{module}\n{name}\n(S'touch {marker}'\ntR.".encode())  # protocol 0: module.name('touch ...')
    with pytest.raises(ValueError, match=rf"refers to {module}\.{name}, which is not on culturegan's allow-list"):
        read_snapshot(path)
    assert not marker.exists()


def test_a_torch_module_inside_a_record_is_refused_by_name(networks, tmp_path):
    generator = record(networks["G"], marker_source(tmp_path / "executed"))
    generator.meta["state"]["_modules"]["extra"] = torch.nn.Linear(2, 2)  # pickles by reference to its class
    (tmp_path / "linear.pkl").write_bytes(snapshot_bytes({"G_ema": generator}))
    with pytest.raises(ValueError, match=r"torch\.nn\.modules\.linear\.Linear, which is not on"):
        read_snapshot(tmp_path / "linear.pkl")


class _Shell:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _StorageBytes:
    def __init__(self, data):
        self.data = data

    def __reduce__(self):
        return torch.storage._load_from_bytes, (self.data,)


def test_a_storage_blob_is_read_weights_only(tmp_path):
    """torch's own _load_from_bytes would torch.load these bytes without restriction."""
    marker = tmp_path / "executed"
    blob = io.BytesIO()
    torch.save(_Shell(f"touch {marker}"), blob, _use_new_zipfile_serialization=False)
    (tmp_path / "blob.pkl").write_bytes(pickle.dumps({"G_ema": _StorageBytes(blob.getvalue())}))
    with pytest.raises(ValueError, match="a tensor storage holds more than tensor data"):
        read_snapshot(tmp_path / "blob.pkl")
    assert not marker.exists()


# ------------------------------------------------------------------------------ hostile pickles

def text(value: str) -> bytes:
    data = value.encode()
    return pickle.SHORT_BINUNICODE + bytes([len(data)]) + data


def get(index: int) -> bytes:
    return pickle.BINGET + bytes([index])


def persistence_record(state: bytes) -> bytes:
    """Opcodes that push a Generator record whose state the opcodes `state` push."""
    return b"".join([pickle.GLOBAL, b"torch_utils.persistence\n_reconstruct_persistent_obj\n", pickle.EMPTY_DICT,
                     pickle.MARK, text("type"), text("class"), text("version"), pickle.BININT1, b"\x06",
                     text("class_name"), text("Generator"), text("state"), state, pickle.SETITEMS, pickle.TUPLE1,
                     pickle.REDUCE])


def assembled(*opcodes: bytes) -> bytes:
    """A protocol 4 pickle of hand-written opcodes, for what pickle.dump never writes."""
    return pickle.PROTO + b"\x04" + b"".join(opcodes) + pickle.STOP


def self_containing_record() -> bytes:
    """G_ema whose _modules holds G_ema itself: the dict of modules is filled after the record is built."""
    return assembled(pickle.EMPTY_DICT, pickle.MEMOIZE,  # 0: _modules
                     pickle.EMPTY_DICT, text("_modules"), get(0), pickle.SETITEM, pickle.MEMOIZE,  # 1: the state
                     persistence_record(get(1)), pickle.MEMOIZE,  # 2: the record
                     get(0), text("self"), get(2), pickle.SETITEM, pickle.POP,
                     pickle.EMPTY_DICT, text("G_ema"), get(2), pickle.SETITEM)


def tree_sharing_a_module(networks, tmp_path) -> bytes:
    generator = record(networks["G_ema"], marker_source(tmp_path / "executed"))
    modules = generator.meta["state"]["_modules"]
    modules["copy"] = modules["mapping"]  # pickle.dump writes it once and fetches it from its memo after
    return snapshot_bytes({"G_ema": generator})


def arguments(networks, tmp_path, **kwargs) -> bytes:
    generator = record(networks["G_ema"], marker_source(tmp_path / "executed"), {**G_KWARGS, **kwargs})
    return snapshot_bytes({"G_ema": generator})


def nested(depth: int) -> dict:
    return {"inner": nested(depth - 1)} if depth else {}


def self_containing_list() -> list:
    loop = []
    loop.append(loop)
    return loop


@pytest.mark.parametrize("build, message", [
    (lambda networks, tmp_path: self_containing_record(), "G_ema: module self: a record or container reached twice"),
    (tree_sharing_a_module, "G_ema: module copy: a record or container reached twice"),
    (lambda networks, tmp_path: arguments(networks, tmp_path, loop=self_containing_list()),
     "G_ema: Generator's arguments: a record or container reached twice"),
    (lambda networks, tmp_path: arguments(networks, tmp_path, deep=nested(40)), "nested more than 32 levels deep"),
])
def test_shared_self_containing_and_deep_trees_are_refused(networks, tmp_path, build, message):
    """NVlabs' networks are trees a few levels deep (each a deep copy); read naively, a module shared
    n levels down is read 2**n times, and one inside itself forever (a RecursionError)."""
    (tmp_path / "tree.pkl").write_bytes(build(networks, tmp_path))
    with pytest.raises(ValueError, match=message):
        read_snapshot(tmp_path / "tree.pkl")


def typed_storage(*values) -> torch.storage.TypedStorage:
    """What tensors pickle their data as (torch warns that the class is deprecated for direct use)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.tensor(values, dtype=torch.float32).storage()


def legacy_blob(*values) -> bytes:
    """The bytes a storage pickles as: a torch.save of it in the legacy format."""
    blob = io.BytesIO()
    torch.save(typed_storage(*values), blob, _use_new_zipfile_serialization=False)
    return blob.getvalue()


class _TensorView:
    """Pickles as torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...), then, when
    `state` is given, BUILD with it (pickle then calls the tensor's __setstate__(state))."""

    def __init__(self, storage, offset, size, stride, state=None):
        self.arguments, self.state = (storage, offset, size, stride, False, collections.OrderedDict()), state

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, self.arguments) + (() if self.state is None else (self.state,))


def snapshot_with_buffer(networks, tmp_path, buffer) -> Path:
    generator = record(networks["G_ema"], marker_source(tmp_path / "executed"))
    generator.meta["state"]["_buffers"]["extra"] = buffer
    path = tmp_path / "buffer.pkl"
    path.write_bytes(snapshot_bytes({"G_ema": generator}))
    return path


@pytest.mark.parametrize("offset, size, stride", [
    (0, (4096,), (1,)),  # torch's set_ would grow the 4-element storage by whatever memory the process held
    (3, (2,), (1,)), (0, (2, 2), (1, 3)),  # past its end
    (0, (10 ** 6, 10 ** 6), (0, 0)),  # a view that convert would write out as 4 TB
    (-1, (2,), (1,)), (0, (2,), (-1,)), (0, (2.0,), (1,)), (0, (2, 2), (1,)), (0, (1,) * 17, (1,) * 17),
])
def test_tensor_views_outside_their_storage_are_refused(networks, tmp_path, offset, size, stride):
    path = snapshot_with_buffer(networks, tmp_path, _TensorView(typed_storage(1, 2, 3, 4), offset, size, stride))
    with pytest.raises(ValueError, match=r"buffer\.pkl: a tensor"):
        read_snapshot(path)


@pytest.mark.parametrize("state", [
    lambda: (typed_storage(1, 2, 3, 4), 0, (4096,), (1,)),  # Tensor.__setstate__ would set_ it anew, grown
    lambda: (True, None, collections.OrderedDict(hook=collections.OrderedDict)),  # or set requires_grad, a hook
])
def test_pickle_build_never_reaches_a_tensor(networks, tmp_path, state):
    view = _TensorView(typed_storage(1, 2, 3, 4), 0, (4,), (1,), state())
    with pytest.raises(ValueError, match="the pickle sets state on a tensor"):
        read_snapshot(snapshot_with_buffer(networks, tmp_path, view))


class _RecordWithState:
    def __init__(self, persistent, state):
        self.persistent, self.state = persistent, state

    def __reduce__(self):
        return self.persistent.__reduce__() + (self.state,)


def test_pickle_build_never_rewrites_a_record(networks, tmp_path):
    generator = record(networks["G_ema"], marker_source(tmp_path / "executed"))
    (tmp_path / "build.pkl").write_bytes(snapshot_bytes({"G_ema": _RecordWithState(generator, {"class_name": 0})}))
    with pytest.raises(ValueError, match="the pickle sets state on a persistence record"):
        read_snapshot(tmp_path / "build.pkl")


def test_storages_in_torch_save_zip_format_are_refused_unread(networks, tmp_path, monkeypatch):
    """Storages always pickle in torch.save's legacy format; a zip (deflate) blob could be a zip bomb."""
    path = write_snapshot(tmp_path / "zip.pkl", {"G_ema": networks["G_ema"]}, tmp_path / "executed", storages="zip")
    assert ZIP_MAGIC in path.read_bytes()
    monkeypatch.setattr(torch, "load", lambda *args, **kwargs: pytest.fail("a zip blob was read"))
    with pytest.raises(ValueError, match="a tensor storage that is not in torch.save's legacy format"):
        read_snapshot(path)


def views_of_one_blob(networks, tmp_path, count: int) -> Path:
    """G_ema with `count` buffers, each on a storage decoded from one memoised blob of 4096 floats."""
    blob = legacy_blob(*[1.0] * 4096)  # pickle.dump writes it once, then fetches it from its memo
    generator = record(networks["G_ema"], marker_source(tmp_path / "executed"))
    for index in range(count):
        generator.meta["state"]["_buffers"][f"view{index}"] = _TensorView(_StorageBytes(blob), 0, (4096,), (1,))
    path = tmp_path / "views.pkl"
    path.write_bytes(snapshot_bytes({"G_ema": generator}))
    return path


def test_a_memoised_storage_blob_is_decoded_once(networks, tmp_path):
    tensors = read_snapshot(views_of_one_blob(networks, tmp_path, 2))["G_ema"].state_dict
    assert tensors["view0"].untyped_storage().data_ptr() == tensors["view1"].untyped_storage().data_ptr()


def test_tensors_beyond_a_multiple_of_the_file_size_are_refused(networks, tmp_path):
    """Before: a 4 MB file of one memoised blob read as 600 MB of tensors."""
    path = views_of_one_blob(networks, tmp_path, 16)  # 16 views of 16 kB in a file of about 40 kB
    with pytest.raises(ValueError, match="the pickle decodes or copies more than 4 times the file's size"):
        read_snapshot(path)


@pytest.mark.parametrize("copies, message", [
    (lambda big: [pickle.GLOBAL, b"dnnlib.util\nEasyDict\n", big, pickle.TUPLE1, pickle.REDUCE],
     "an EasyDict built as a copy of another"),
    (lambda big: [pickle.GLOBAL, b"collections\nOrderedDict\n", big, pickle.TUPLE1, pickle.REDUCE],
     "an OrderedDict built as a copy of another"),
    (lambda big: [pickle.GLOBAL, b"builtins\nset\n", big, pickle.TUPLE1, pickle.REDUCE] * 300 + [pickle.POP] * 299,
     "decodes or copies more than 4 times the file's size"),
])
def test_copies_of_a_memoised_value_are_refused(tmp_path, copies, message):
    """A constructor given one memoised dict or list again and again would copy it each time."""
    big = assembled(pickle.EMPTY_DICT, pickle.MARK, *(text(f"k{i}") + pickle.NONE for i in range(300)),
                    pickle.SETITEMS)[2:-1]
    (tmp_path / "copies.pkl").write_bytes(assembled(big, pickle.MEMOIZE, pickle.POP, *copies(get(0))))
    with pytest.raises(ValueError, match=message):
        read_snapshot(tmp_path / "copies.pkl")


def test_a_memo_index_out_of_sequence_is_refused_before_unpickling(tmp_path):
    """CPython's unpickler would grow and zero its memo up to the index: 20 GB for 2**31."""
    put = pickle.LONG_BINPUT + (2 ** 24).to_bytes(4, "little")
    (tmp_path / "memo.pkl").write_bytes(assembled(pickle.EMPTY_DICT, put))
    with pytest.raises(ValueError, match="a memo index 16777216 at byte 3, after 0 memo entries"):
        read_snapshot(tmp_path / "memo.pkl")


def damaged_storage_blob() -> bytes:
    """A legacy torch.save of a storage whose list of keys names another key than its storage's:
    torch.load fails with an AssertionError (as some random byte flips make it)."""
    blob = legacy_blob(1, 2, 3)
    key = re.search(rb"Storage\nq\x01X.{4}(\d+)", blob, re.DOTALL).group(1)
    at = blob.rindex(key)
    return blob[:at] + b"x" + blob[at + 1:]


def test_a_damaged_storage_is_refused_clearly(tmp_path):
    (tmp_path / "damaged.pkl").write_bytes(pickle.dumps({"G_ema": _StorageBytes(damaged_storage_blob())}))
    with pytest.raises(ValueError, match=r"a tensor storage that torch cannot read, damaged or cut short "
                                         r"\(AssertionError: storage key 'x"):
        read_snapshot(tmp_path / "damaged.pkl")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's, on flipped protocol bytes
def test_random_byte_flips_are_read_or_refused_with_a_value_error(tmp_path):
    """Before: 3% of such flips raised torch's AssertionError, and cycles a RecursionError."""
    small = network(Generator, 7, z_dim=4, c_dim=0, w_dim=4, img_resolution=4, img_channels=3,
                    mapping_kwargs={"num_layers": 1}, synthesis_kwargs={"channel_base": 16, "channel_max": 4})
    data = write_snapshot(tmp_path / "small.pkl", {"G_ema": small}, tmp_path / "executed").read_bytes()
    flips = random.Random(0)
    for _ in range(300):
        damaged = bytearray(data)
        for _ in range(flips.randint(1, 4)):
            damaged[flips.randrange(len(damaged))] = flips.randrange(256)
        (tmp_path / "flipped.pkl").write_bytes(damaged)
        try:
            read_snapshot(tmp_path / "flipped.pkl")
        except ValueError:
            pass
    assert not (tmp_path / "executed").exists()


class _NumpyScalar:
    def __init__(self, dtype, data):
        self.dtype, self.data = dtype, data

    def __reduce__(self):
        return np.float64(0).__reduce__()[0], (self.dtype, self.data)  # numpy's multiarray.scalar


@pytest.mark.parametrize("dtype, message", [
    (np.dtype(object), "a numpy dtype 'O8'; only plain number types"),
    (np.dtype([("x", "<f8")]), "a numpy dtype 'V8'; only plain number types"),
])
def test_numpy_values_other_than_plain_numbers_are_refused(networks, tmp_path, dtype, message):
    generator = record(networks["G"], marker_source(tmp_path / "executed"))
    generator.meta["state"]["weight_gain"] = _NumpyScalar(dtype, bytes(8))
    (tmp_path / "object.pkl").write_bytes(snapshot_bytes({"G_ema": generator}))
    with pytest.raises(ValueError, match=message):
        read_snapshot(tmp_path / "object.pkl")


def test_a_numpy_dtype_built_without_its_constructor_is_checked(tmp_path):
    """pickle's NEWOBJ calls __new__ alone: a check in __init__ would be skipped."""
    (tmp_path / "dtype.pkl").write_bytes(assembled(pickle.GLOBAL, b"numpy\ndtype\n", text("O8"), pickle.TUPLE1,
                                                   pickle.NEWOBJ))
    with pytest.raises(ValueError, match="a numpy dtype 'O8'; only plain number types"):
        read_snapshot(tmp_path / "dtype.pkl")


def test_tensorflow_era_pickles_are_refused_with_what_to_do(tmp_path):
    marker = tmp_path / "executed"
    with fake_nvlabs_modules():
        data = pickle.dumps(tuple(Network(name, marker_source(marker)) for name in ("G", "D", "Gs")))
    (tmp_path / "stylegan2-ffhq-config-f.pkl").write_bytes(data)
    with forbid_nvlabs_imports(), pytest.raises(ValueError, match=r"TensorFlow-era .* `python legacy\.py --source"):
        load_generator(tmp_path / "stylegan2-ffhq-config-f.pkl")
    assert not marker.exists()


def test_other_persistence_versions_are_refused(networks, tmp_path):
    path = write_snapshot(tmp_path / "v5.pkl", {"G_ema": networks["G_ema"]}, tmp_path / "executed", version=5)
    with pytest.raises(ValueError, match="persistence version 5; culturegan reads version 6"):
        read_snapshot(path)


@pytest.mark.parametrize("contents, message", [
    (b"", "is empty, not an NVlabs pickle"),
    (b"GIF89a not a pickle", "not a readable pickle"),
    (pickle.dumps([1, 2, 3]), "holds a pickled list, not an NVlabs snapshot"),
    (pickle.dumps({"training_set_kwargs": {"resolution": 16}}), r"a dict without networks \(keys \['training_set"),
])
def test_files_that_are_not_snapshots_are_refused(tmp_path, contents, message):
    (tmp_path / "model.pkl").write_bytes(contents)
    with pytest.raises(ValueError, match=message):
        read_snapshot(tmp_path / "model.pkl")


def test_truncated_and_zip_files_are_refused(snapshot, tmp_path):
    (tmp_path / "cut.pkl").write_bytes(snapshot.read_bytes()[:50_000])
    with pytest.raises(ValueError, match="cut.pkl is not a readable pickle"):
        read_snapshot(tmp_path / "cut.pkl")
    torch.save({"w": torch.ones(2)}, tmp_path / "state.pkl")
    with pytest.raises(ValueError, match=r"in torch.save's format \(a zip archive or its legacy pickle\), not an"):
        read_snapshot(tmp_path / "state.pkl")
    with pytest.raises(FileNotFoundError, match="missing.pkl does not exist"):
        load_generator(tmp_path / "missing.pkl")


# ------------------------------------------------------------------------------ networks from snapshots

def test_load_generator_rebuilds_g_ema_or_g_exactly(networks, snapshot):
    with forbid_nvlabs_imports():
        g_ema, card = load_generator(snapshot)
        g, _ = load_generator(snapshot, "G")
    assert torch.equal(images(g_ema), images(networks["G_ema"]))
    assert torch.equal(images(g), images(networks["G"]))
    assert not torch.equal(images(g), images(g_ema))
    assert card["architecture"] == {"kind": "stylegan2_generator", "init_kwargs": G_KWARGS}
    assert card["source_file"]["name"] == snapshot.name and card["source_file"]["network"] == "G_ema"
    assert card["description"] == "StyleGAN2 generator (16x16, 3 channels, z 8, w 8, 2 mapping layers)"


def test_load_discriminator_rebuilds_d_exactly(networks, snapshot):
    with forbid_nvlabs_imports():
        d, card = load_discriminator(snapshot)
    assert torch.equal(logits(d), logits(networks["D"]))
    assert card["architecture"] == {"kind": "stylegan2_discriminator", "init_kwargs": networks["D"].init_kwargs}


def test_snapshot_networks_are_picked_by_role(snapshot):
    with pytest.raises(ValueError, match="holds a StyleGAN2 discriminator .*, not a generator"):
        load_generator(snapshot, "D")
    with pytest.raises(ValueError, match="has no network 'G_AB'; it holds G, D, G_ema"):
        load_generator(snapshot, "G_AB")
    with pytest.raises(ValueError, match="makes images from noise .* not a generator that transfers images"):
        load_run(snapshot)  # what transfer, evaluate and serve read


@pytest.mark.parametrize("recorded_layers, missing, unexpected", [
    (2, [], ["mapping.fc2.bias", "mapping.fc2.weight"]),
    (4, ["mapping.fc3.bias", "mapping.fc3.weight"], []),
])
def test_a_mapping_depth_the_keys_do_not_have_is_refused_naming_them(tmp_path, recorded_layers, missing, unexpected):
    """NVlabs' resume would copy what matches and silently drop the rest."""
    three_layers = network(Generator, 4, **{**G_KWARGS, "mapping_kwargs": {"num_layers": 3}})
    kwargs = {**G_KWARGS, "mapping_kwargs": {"num_layers": recorded_layers}}
    path = tmp_path / "mismatch.pkl"
    path.write_bytes(snapshot_bytes({"G_ema": record(three_layers, marker_source(tmp_path / "executed"), kwargs)}))
    with pytest.raises(ValueError) as error:
        load_generator(path)
    assert f"{len(missing)} missing {missing}" in str(error.value)
    assert f"{len(unexpected)} unexpected {unexpected}" in str(error.value)
    with pytest.raises(ValueError):
        convert(path, tmp_path / "out.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mismatch.pkl"]  # nothing written


def test_recorded_arguments_the_networks_do_not_take_are_refused(networks, tmp_path):
    kwargs = {**G_KWARGS, "synthesis_kwargs": {**G_KWARGS["synthesis_kwargs"], "architecture": "resnet"}}
    path = tmp_path / "resnet.pkl"
    path.write_bytes(snapshot_bytes({"G_ema": record(networks["G_ema"], marker_source(tmp_path / "x"), kwargs)}))
    with pytest.raises(ValueError, match="architecture 'resnet' is not supported"):
        load_generator(path)


def test_convert_writes_safetensors_that_load_to_the_same_networks(networks, snapshot, tmp_path):
    path, card = convert(snapshot, tmp_path / "ffhq.safetensors")
    assert json.loads((tmp_path / "ffhq.json").read_text()) == card
    assert card["parameters"] == sum(p.numel() for p in networks["G_ema"].parameters())
    assert card["tensors"] == len(networks["G_ema"].state_dict())
    generator, loaded_card = load_generator(path)
    assert loaded_card == card and torch.equal(images(generator), images(networks["G_ema"]))

    assert cli.main(["convert", str(snapshot), str(tmp_path / "d.safetensors"), "--network", "D"]) == 0
    discriminator, d_card = load_discriminator(tmp_path / "d.safetensors")
    assert d_card["source_file"]["network"] == "D" and torch.equal(logits(discriminator), logits(networks["D"]))
    with pytest.raises(ValueError, match="holds a StyleGAN2 generator .*, not a generator that transfers images"):
        load_run(path).generator()


def test_state_dicts_of_our_networks_load_with_the_architecture_read_off_the_keys(tmp_path):
    """No card: the keys and shapes give the arguments (conditional, grey, narrower mapping layers)."""
    g_kwargs = dict(z_dim=6, c_dim=3, w_dim=8, img_resolution=32, img_channels=1,
                    mapping_kwargs={"num_layers": 3, "layer_features": 5},
                    synthesis_kwargs={"channel_base": 256, "channel_max": 16})
    d_kwargs = dict(c_dim=3, img_resolution=32, img_channels=1, channel_base=256, channel_max=16, cmap_dim=12,
                    mapping_kwargs={"num_layers": 2}, epilogue_kwargs={"mbstd_num_channels": 2})
    generator, discriminator = network(Generator, 5, **g_kwargs), network(Discriminator, 6, **d_kwargs)
    torch.save(generator.state_dict(), tmp_path / "g.pt")
    save_file(discriminator.state_dict(), str(tmp_path / "d.safetensors"))
    loaded, card = load_generator(tmp_path / "g.pt")
    z, c = torch.randn(2, 6), torch.eye(3)[[0, 2]]
    with torch.no_grad():
        assert torch.equal(loaded(z, c, noise_mode="const"), generator(z, c, noise_mode="const"))
    assert Generator(**card["architecture"]["init_kwargs"]).init_kwargs == loaded.init_kwargs
    loaded_d, _ = load_discriminator(tmp_path / "d.safetensors")
    img = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded_d(img, torch.eye(3)[[0, 1, 2, 0]]), discriminator(img, torch.eye(3)[[0, 1, 2, 0]]))


def test_unusual_channel_widths_are_read_off_the_keys(tmp_path):
    """channel_base 500 at 16 px: widths 125, 62, 31, which channel_base C(16) * 16 = 496 does not give."""
    generator = network(Generator, 8, **{**G_KWARGS, "synthesis_kwargs": {"channel_base": 500, "channel_max": 512}})
    discriminator = network(Discriminator, 9, **{**D_KWARGS, "channel_base": 500, "channel_max": 512})
    torch.save(generator.state_dict(), tmp_path / "g.pt")
    torch.save(discriminator.state_dict(), tmp_path / "d.pt")
    loaded, card = load_generator(tmp_path / "g.pt")
    assert card["architecture"]["init_kwargs"]["synthesis_kwargs"] == {"channel_base": 500, "channel_max": 125}
    assert torch.equal(images(loaded), images(generator))
    loaded_d, _ = load_discriminator(tmp_path / "d.pt")
    assert torch.equal(logits(loaded_d), logits(discriminator))


def test_recorded_arguments_are_built_on_the_meta_device_until_they_fit(networks, tmp_path, monkeypatch):
    """Before: w_dim 65536 in a 4 kB file built 137 GB of mapping layers before anything compared them."""
    (tmp_path / "wide.pkl").write_bytes(arguments(networks, tmp_path, w_dim=4096))
    devices, build = [], StyleGAN2Architecture.build
    monkeypatch.setattr(StyleGAN2Architecture, "build",
                        lambda self, fused=True: devices.append(torch.get_default_device()) or build(self, fused))
    with pytest.raises(ValueError, match=r"of other shapes \[.*'mapping.fc0.weight \(8, 8\) \(model \(4096, 8\)\)'"):
        load_generator(tmp_path / "wide.pkl")
    assert devices == [torch.device("meta")]


def test_a_mapping_deeper_than_the_file_is_refused_before_any_build(networks, tmp_path):
    """Even on the meta device, 100,000 layers take a minute and a GB to build."""
    (tmp_path / "deep.pkl").write_bytes(arguments(networks, tmp_path, mapping_kwargs={"num_layers": 100_000}))
    with pytest.raises(ValueError, match="the architecture stacks 100000 layers, but the file holds only"):
        load_generator(tmp_path / "deep.pkl")


def stylegan3_generator() -> torch.nn.Module:
    """What names a StyleGAN3 generator (its Fourier-feature input, synthesis.input), small."""
    generator = type("Generator", (torch.nn.Module,), {})()
    generator.synthesis = torch.nn.Module()
    generator.synthesis.input = torch.nn.Module()
    generator.synthesis.input.register_buffer("freqs", torch.randn(8, 2))
    generator.synthesis.input.affine = torch.nn.Linear(8, 4)
    return generator


def test_stylegan3_generators_are_named_as_not_supported(tmp_path):
    kwargs = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, mapping_kwargs={}, channel_base=32768,
                  channel_max=512, magnitude_ema_beta=0.999)  # stylegan3's Generator takes synthesis_kwargs flat
    generator = stylegan3_generator()
    (tmp_path / "sg3.pkl").write_bytes(snapshot_bytes({"G_ema": record(generator, marker_source(tmp_path / "x"),
                                                                       kwargs)}))
    with pytest.raises(ValueError, match=r"sg3.pkl \(G_ema\) is a StyleGAN3 generator .* culturegan does not build"):
        load_generator(tmp_path / "sg3.pkl")
    torch.save(generator.state_dict(), tmp_path / "sg3.pt")
    with pytest.raises(ValueError, match="these tensors are a StyleGAN3 generator"):
        load_generator(tmp_path / "sg3.pt")


def test_snapshots_are_recognised_by_their_contents_not_their_names(networks, snapshot, tmp_path):
    for name in ("FFHQ.PKL", "ffhq-snapshot"):
        (tmp_path / name).write_bytes(snapshot.read_bytes())
        generator, card = load_generator(tmp_path / name)
        assert card["source_file"]["network"] == "G_ema" and torch.equal(images(generator), images(networks["G_ema"]))
    torch.save(networks["G"].state_dict(), tmp_path / "state.pkl")  # torch.save's files are none, whatever their name
    assert torch.equal(images(load_generator(tmp_path / "state.pkl")[0]), images(networks["G"]))
    (tmp_path / "download.pkl").write_bytes(b"<!DOCTYPE html><title>Sign in</title>")
    with pytest.raises(ValueError, match="download.pkl is not a pickle .* another kind of file named .pkl"):
        load_generator(tmp_path / "download.pkl")
