"""A float32 copy of a GGUF file: the same metadata and tokenizer, every tensor dequantized.

llama.cpp's float32 mode is the peer the torch methods (which dequantize the shipped Q4_1
file to float32 on load) must be compared with at equal bytes per step. The `gguf`
package (llama.cpp's own reader and writer) does the reading, the dequantizing and the
writing; only the loop that ties them together is here.

    python benchmarks/gguf_f32.py SRC.gguf DST.gguf
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def dequantize_gguf(src: Path, dst: Path) -> Path:
    """Write `dst`: `src` with every tensor as float32 (general.file_type ALL_F32)."""
    import gguf

    reader = gguf.GGUFReader(str(src))
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    tmp = dst.with_suffix(".part")
    writer = gguf.GGUFWriter(str(tmp), arch=arch, endianess=reader.endianess)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue  # written by GGUFWriter itself
        value = field.contents()
        if field.name == gguf.Keys.General.FILE_TYPE:
            value = int(gguf.LlamaFileType.ALL_F32)
        vtype = field.types[0]
        sub_type = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, value, vtype, sub_type=sub_type)
    for tensor in reader.tensors:
        data = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        # the reader gives shapes in numpy order; the writer wants the same
        writer.add_tensor(tensor.name, np.ascontiguousarray(data),
                          raw_dtype=gguf.GGMLQuantizationType.F32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(dst)
    return dst


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[-1])
    print(dequantize_gguf(Path(sys.argv[1]), Path(sys.argv[2])))
