"""safetensors.torch's API for .tqm files.

    import tqm.torch
    tqm.torch.save_file(model.state_dict(), "model.tqm", granularity="row")
    state = tqm.torch.load_file("model.tqm", device="cpu")   # {name: Tensor}

torch.float32, float16 and bfloat16 tensors of 2 or more dimensions are
quantized by the pack options and load back as float32; every other dtype
(int8..int64, uint8, bool, float64), 0-d and empty tensors, and the tensors
`keep` names are stored verbatim and load back bit-exact in their own dtype
(bfloat16 kept verbatim loads as torch.bfloat16).
"""

import numpy as _np

from . import _BF16, _error, _numpy_item, _save, safe_open

__all__ = ["save_file", "load_file"]


def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the machine
        raise ImportError("tqm.torch needs PyTorch (Debian: python3-torch)") from e
    return torch


def _to_numpy(name, tensor):
    torch = _torch()
    if not isinstance(tensor, torch.Tensor):
        raise _error(6, "tensor '%s' is a %s, not a torch.Tensor" % (name, type(tensor).__name__))
    if tensor.layout != torch.strided:
        raise _error(6, "tensor '%s': layout %s; only dense tensors can be stored" % (name, tensor.layout))
    t = tensor.detach().to("cpu").contiguous()
    if t.dtype == torch.bfloat16:
        return name, t.view(torch.int16).numpy().view(_np.uint16), _BF16
    try:
        arr = t.numpy()
    except TypeError as e:
        raise _error(6, "tensor '%s': torch dtype %s cannot be stored (%s)" % (name, t.dtype, e))
    return _numpy_item(name, arr)


def _from_numpy(arr, info, device="cpu"):
    """A torch tensor of `arr` as TqmFile.tensor returns it for TensorInfo
    `info`: bfloat16 bit patterns become torch.bfloat16; uint16 and uint32,
    which torch lacks, widen to int32 and int64 (values unchanged)."""
    torch = _torch()
    if not arr.flags.c_contiguous:
        arr = arr.copy(order="C")
    if info.storage == "raw" and info.source_dtype == "bf16":
        out = torch.from_numpy(arr.view(_np.int16)).view(torch.bfloat16)
    elif arr.dtype == _np.uint16:
        out = torch.from_numpy(arr.astype(_np.int32))
    elif arr.dtype == _np.uint32:
        out = torch.from_numpy(arr.astype(_np.int64))
    elif arr.dtype == _np.uint64:
        if arr.size and int(arr.max()) > _np.iinfo(_np.int64).max:
            raise _error(6, "tensor '%s': uint64 values past int64, which torch cannot hold" % info.name)
        out = torch.from_numpy(arr.astype(_np.int64))
    else:
        out = torch.from_numpy(arr)
    return out if str(device) == "cpu" else out.to(device)


def save_file(tensors, filename, metadata=None, **options):
    """Writes `tensors` ({str: torch.Tensor}) to `filename` through the C
    writer, atomically. metadata and pack options as tqm.numpy.save_file.
    Returns tqm.PackStats."""
    items = [_to_numpy(name, t) for name, t in tensors.items()]
    return _save(items, filename, metadata, **options)


def load_file(filename, device="cpu", dequantize=True):
    """{name: torch.Tensor} of every tensor of `filename`, on `device`."""
    with safe_open(filename, framework="pt", device=device, dequantize=dequantize) as f:
        return {name: f.get_tensor(name) for name in f.keys()}
