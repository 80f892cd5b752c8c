"""safetensors.numpy's API for .tqm files.

    import tqm.numpy
    tqm.numpy.save_file({"w": w, "ids": ids}, "model.tqm", metadata={"k": "v"},
                        granularity="row", bits=8)
    tensors = tqm.numpy.load_file("model.tqm")     # {name: numpy array}

float32 and float16 arrays of 2 or more dimensions are quantized by the pack
options (1-D ones too with quantize_all=True) and load back as float32 within
half a quantization step; every other dtype (int8..int64, uint8..uint64,
bool, float64), 0-d and empty arrays, and the arrays `keep` names are stored
verbatim (RAW storage) and load back bit-exact in their own dtype.
"""

from . import _numpy_item, _save, safe_open

__all__ = ["save_file", "load_file"]


def save_file(tensor_dict, filename, metadata=None, **options):
    """Writes `tensor_dict` ({str: numpy array}) to `filename` through the C
    writer (atomically: a failed write leaves `filename` as it was).

    metadata: {str: str | int | float | bytes}, stored typed.
    Pack options: profile ("size", "balanced" (default), "speed"),
    granularity ("tensor" (default), "row", "group:G" or "group" with
    group_size=G), bits (1..8, default 8), quantize_all (quantize 1-D float
    arrays too), keep (True: store everything verbatim; a regular expression
    searched in each name; a collection of names; or a callable name ->
    bool), threads (0 = all cores), chunk_size, entropy, lanes, zstd_level,
    max_table_entries. Returns tqm.PackStats."""
    items = [_numpy_item(name, arr) for name, arr in tensor_dict.items()]
    return _save(items, filename, metadata, **options)


def load_file(filename, dequantize=True):
    """{name: numpy array} of every tensor of `filename`, in file order."""
    with safe_open(filename, framework="np", dequantize=dequantize) as f:
        return {name: f.get_tensor(name) for name in f.keys()}


