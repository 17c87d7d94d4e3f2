#!/usr/bin/env python3
"""Converts a PyTorch weights file (a state dict saved by torch.save) into safetensors, with
Python's standard library only: no PyTorch, no NumPy.

Both of PyTorch's formats are read: the legacy one (torch < 1.6: a magic-number pickle, a
protocol pickle, a system-info pickle, the state-dict pickle, a pickle of storage keys, then each
storage as an int64 element count and its raw little-endian bytes) and the zip one (archive/data.pkl
plus archive/data/<key>). The unpickler resolves only the handful of names a state dict uses
(OrderedDict, the tensor-rebuild function, the storage types) and refuses every other: a weights
file cannot run code here. Tensors are written contiguous, float32 and int64 as stored; names are
kept. Usage: pth_to_safetensors.py IN.pth OUT.safetensors
"""
import collections, json, os, pickle, struct, sys, zipfile

DTYPES = {  # storage class -> (safetensors dtype, bytes per element)
    "FloatStorage": ("F32", 4), "DoubleStorage": ("F64", 8), "HalfStorage": ("F16", 2),
    "LongStorage": ("I64", 8), "IntStorage": ("I32", 4), "ShortStorage": ("I16", 2),
    "CharStorage": ("I8", 1), "ByteStorage": ("U8", 1), "BoolStorage": ("BOOL", 1),
}


class StorageType:
    def __init__(self, name): self.name = name


class TensorRef:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)


def rebuild_tensor(storage, storage_offset, size, stride, *_):
    return TensorRef(storage, storage_offset, size, stride)


def rebuild_parameter(data, *_):
    return data


class Unpickler(pickle.Unpickler):
    def __init__(self, file):
        super().__init__(file)
        self.storages = {}  # key -> storage class name

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return rebuild_parameter
        if module == "torch" and name in DTYPES:
            return StorageType(name)
        raise pickle.UnpicklingError(f"refusing {module}.{name}: not part of a plain state dict")

    def persistent_load(self, pid):
        # ('storage', storage type, key, location, element count[, view metadata])
        if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        storage_type, key, _location, count = pid[1], str(pid[2]), pid[3], pid[4]
        if not isinstance(storage_type, StorageType):
            raise pickle.UnpicklingError(f"unexpected storage type {storage_type!r}")
        self.storages[key] = storage_type.name
        return (key, storage_type.name, count)


def read_legacy(path):
    with open(path, "rb") as f:
        magic = pickle.load(f)
        if magic != 0x1950A86A20F9469CFC6C:
            raise ValueError(f"{path}: not a PyTorch file (magic {magic!r})")
        pickle.load(f)  # protocol version
        pickle.load(f)  # system info (endianness, type sizes)
        unpickler = Unpickler(f)
        state = unpickler.load()
        blobs = {}
        for key in pickle.load(f):  # the storages follow in this order
            key = str(key)
            if key not in unpickler.storages:
                raise ValueError(f"{path}: storage {key} is not used by any tensor")
            (count,) = struct.unpack("<q", f.read(8))
            element = DTYPES[unpickler.storages[key]][1]
            blobs[key] = f.read(count * element)
            if len(blobs[key]) != count * element:
                raise ValueError(f"{path}: storage {key} is truncated")
    return state, blobs


def read_zip(path):
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise ValueError(f"{path}: expected one data.pkl, found {len(pickles)}")
        root = pickles[0][: -len("data.pkl")]
        state = Unpickler(archive.open(pickles[0])).load()
        blobs = {}
        for value in state.values():
            if isinstance(value, TensorRef):
                key = value.storage[0]
                if key not in blobs:
                    blobs[key] = archive.read(f"{root}data/{key}")
    return state, blobs


def contiguous_bytes(tensor, blob):
    _, dtype_name, _ = tensor.storage
    element = DTYPES[dtype_name][1]
    size, stride = tensor.size, tensor.stride
    expected, running = [], 1
    for extent in reversed(size):
        expected.insert(0, running)
        running *= extent
    count = running
    start = tensor.offset * element
    if count == 0:
        return b""
    if list(stride) == expected or count == 1:
        data = blob[start: start + count * element]
    else:  # a strided view: gather element by element
        out = bytearray()
        index = [0] * len(size)
        for _ in range(count):
            position = tensor.offset + sum(i * s for i, s in zip(index, stride))
            out += blob[position * element: (position + 1) * element]
            for axis in reversed(range(len(size))):
                index[axis] += 1
                if index[axis] < size[axis]:
                    break
                index[axis] = 0
        data = bytes(out)
    if len(data) != count * element:
        raise ValueError("a tensor reaches past the end of its storage (truncated file?)")
    return data


def main(source, target):
    state, blobs = read_zip(source) if zipfile.is_zipfile(source) else read_legacy(source)
    if "state_dict" in state and not isinstance(state["state_dict"], TensorRef):
        state = state["state_dict"]
    header, chunks, offset = {}, [], 0
    for name, tensor in state.items():
        if not isinstance(tensor, TensorRef):
            continue
        data = contiguous_bytes(tensor, blobs[tensor.storage[0]])
        header[name] = {"dtype": DTYPES[tensor.storage[1]][0], "shape": list(tensor.size),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    header["__metadata__"] = {"source": os.path.basename(source), "converted_by": "ops/lib/pth_to_safetensors.py"}
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    temporary = target + ".part"
    with open(temporary, "wb") as out:
        out.write(struct.pack("<Q", len(encoded)))
        out.write(encoded)
        for chunk in chunks:
            out.write(chunk)
    os.replace(temporary, target)
    print(f"{len(header) - 1} tensors, {offset / 1e6:.1f} MB -> {target}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
