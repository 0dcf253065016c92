"""A stand-in for torch.distributed.checkpoint.save on one rank (Debian's python3-torch 1.13
has no torch.distributed.checkpoint): the same files, written the way
torch/distributed/checkpoint/filesystem.py writes them. `__0_0.distcp` holds the items one
after the other, byte items first, then each tensor as a complete torch.save archive, in the
flattened state dict's order (one writer thread: no size sorting); `.metadata` is
pickle.dump of a Metadata whose storage_data maps MetadataIndex(fqn, chunk offset) to
_StorageInfo(relative_path, offset, length). The classes are declared under the module names
torch uses, so the pickle names the same globals a real one does.
"""
import dataclasses
import io
import os
import pickle
import sys
import types
from typing import Any, List, Optional

import torch


def _module(name):
    if name not in sys.modules:
        sys.modules[name] = types.ModuleType(name)
    return sys.modules[name]


def _declare(module, cls):
    cls.__module__ = module
    cls.__qualname__ = cls.__name__
    setattr(_module(module), cls.__name__, cls)
    return cls


_MD = "torch.distributed.checkpoint.metadata"
_FS = "torch.distributed.checkpoint.filesystem"
_ST = "torch.distributed._shard.sharded_tensor.metadata"


@dataclasses.dataclass
class ChunkStorageMetadata:
    offsets: torch.Size
    sizes: torch.Size


@dataclasses.dataclass
class TensorProperties:
    dtype: torch.dtype = torch.float32
    layout: torch.layout = torch.strided
    requires_grad: bool = False
    memory_format: torch.memory_format = torch.contiguous_format
    pin_memory: bool = False


@dataclasses.dataclass
class TensorStorageMetadata:
    properties: TensorProperties
    size: torch.Size
    chunks: List[ChunkStorageMetadata]


@dataclasses.dataclass
class BytesStorageMetadata:
    pass


@dataclasses.dataclass
class StorageMeta:
    checkpoint_id: Any = None
    save_id: Optional[str] = None
    load_id: Optional[str] = None


@dataclasses.dataclass
class Metadata:
    state_dict_metadata: dict
    planner_data: Any = None
    storage_data: Any = None
    storage_meta: Optional[StorageMeta] = None


@dataclasses.dataclass(frozen=True)
class MetadataIndex:
    fqn: str
    offset: Optional[torch.Size] = None
    index: Optional[int] = dataclasses.field(hash=False, compare=False, default=None)

    def __init__(self, fqn, offset=None, index=None):
        object.__setattr__(self, "fqn", fqn)
        object.__setattr__(self, "index", index)
        if offset is not None:
            object.__setattr__(self, "offset", torch.Size(offset))


@dataclasses.dataclass
class _StorageInfo:
    relative_path: str
    offset: int
    length: int


for _c in (ChunkStorageMetadata, TensorStorageMetadata, BytesStorageMetadata, StorageMeta,
           Metadata, MetadataIndex):
    _declare(_MD, _c)
_declare(_FS, _StorageInfo)
if not hasattr(_module(_ST), "TensorProperties"):
    _declare(_ST, TensorProperties)


def flatten(state, prefix=""):
    """DCP's flatten_state_dict: nested dicts (and lists) to dotted fully qualified names."""
    out = {}
    items = state.items() if isinstance(state, dict) else enumerate(state)
    for k, v in items:
        name = f"{prefix}{k}"
        if isinstance(v, dict) or (isinstance(v, list) and any(isinstance(x, (dict, torch.Tensor)) for x in v)):
            out.update(flatten(v, name + "."))
        else:
            out[name] = v
    return out


def save(state, directory, file_name="__0_0.distcp"):
    os.makedirs(directory, exist_ok=True)
    flat = flatten(state)
    byte_items = [(k, v) for k, v in flat.items() if not torch.is_tensor(v)]
    tensor_items = [(k, v) for k, v in flat.items() if torch.is_tensor(v)]
    sd_md, storage = {}, {}
    with open(os.path.join(directory, file_name), "wb") as f:
        for k, v in byte_items:
            buf = io.BytesIO()
            torch.save(v, buf)
            off = f.tell()
            f.write(buf.getbuffer())
            storage[MetadataIndex(k)] = _StorageInfo(file_name, off, f.tell() - off)
            sd_md[k] = BytesStorageMetadata()
        for k, v in tensor_items:
            v = v.detach().contiguous().clone()
            off = f.tell()
            torch.save(v, f)
            zeros = torch.Size([0] * v.dim())
            storage[MetadataIndex(k, zeros, 0)] = _StorageInfo(file_name, off, f.tell() - off)
            sd_md[k] = TensorStorageMetadata(TensorProperties(dtype=v.dtype), v.size(),
                                             [ChunkStorageMetadata(zeros, v.size())])
    md = Metadata(sd_md, storage_data=storage, storage_meta=StorageMeta(directory, "save"))
    with open(os.path.join(directory, ".metadata"), "wb") as f:
        pickle.dump(md, f)
    return os.path.join(directory, file_name)
