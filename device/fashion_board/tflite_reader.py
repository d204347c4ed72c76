"""A reader of the part of the TFLite flatbuffer schema (tensorflow/lite/schema/schema.fbs) the numpy
engine needs, with the standard library's struct: operator codes, one subgraph's tensors (shape,
type, quantization, constant data) and operators (inputs, outputs, builtin options).

A flatbuffer table starts with the signed offset back to its vtable; the vtable lists, per field
number, where the field sits in the table (0: absent, use the default). Offsets to strings, vectors
and tables are unsigned and relative to where they are stored. Field numbers below follow schema.fbs.
"""

from __future__ import annotations

import dataclasses
import struct

import numpy as np

from .common import ModelError

FILE_IDENTIFIER = b"TFL3"
# TensorType -> numpy dtype, for the types the engine can meet (schema.fbs enum TensorType).
TENSOR_TYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 6: np.bool_,
                7: np.int16, 9: np.int8, 10: np.float64}
# Model fields: 1 operator_codes, 2 subgraphs, 4 buffers. SubGraph: 0 tensors, 1 inputs, 2 outputs,
# 3 operators. Tensor: 0 shape, 1 type, 2 buffer, 3 name, 4 quantization, 7 shape_signature.
# QuantizationParameters: 2 scale, 3 zero_point, 6 quantized_dimension. Operator: 0 opcode_index,
# 1 inputs, 2 outputs, 4 builtin_options. OperatorCode: 0 deprecated_builtin_code, 3 builtin_code.
# Buffer: 0 data, 1 offset, 2 size (models over 2 GB keep data after the flatbuffer).


@dataclasses.dataclass
class Tensor:
    index: int
    name: str
    shape: tuple
    shape_signature: tuple
    dtype: type
    scales: np.ndarray  # float32, one per tensor or one per channel; empty when not quantized.
    zero_points: np.ndarray  # int64, as many as scales.
    quantized_dimension: int
    data: np.ndarray | None  # The constant's values in `shape`, or None for a tensor computed at run time.


@dataclasses.dataclass
class Operator:
    code: int  # BuiltinOperator number.
    inputs: tuple  # Tensor indices; -1 for an optional input left out.
    outputs: tuple
    options: Table | None  # The builtin options table, read by the op's kernel.


@dataclasses.dataclass
class Model:
    tensors: list
    inputs: tuple
    outputs: tuple
    operators: list


class Table:
    """One flatbuffer table: typed access to its fields by number, with the schema's defaults."""

    def __init__(self, data: bytes, position: int):
        self.data, self.position = data, position
        self.vtable = position - struct.unpack_from("<i", data, position)[0]
        self.vtable_size = struct.unpack_from("<H", data, self.vtable)[0]

    def field(self, number: int) -> int:
        """Where field `number` is stored, or 0 when the table leaves it out."""
        entry = 4 + 2 * number
        if entry >= self.vtable_size:
            return 0
        offset = struct.unpack_from("<H", self.data, self.vtable + entry)[0]
        return self.position + offset if offset else 0

    def scalar(self, number: int, kind: str, default=0):
        where = self.field(number)
        return struct.unpack_from("<" + kind, self.data, where)[0] if where else default

    def target(self, number: int) -> int:
        """Where an offset field (string, vector, table) points, or 0 when it is absent."""
        where = self.field(number)
        return where + struct.unpack_from("<I", self.data, where)[0] if where else 0

    def table(self, number: int) -> Table | None:
        where = self.target(number)
        return Table(self.data, where) if where else None

    def vector(self, number: int, kind: str) -> tuple:
        """A vector of scalars ('i', 'f', 'q', 'B') as a tuple; () when absent."""
        where = self.target(number)
        if not where:
            return ()
        length = struct.unpack_from("<I", self.data, where)[0]
        return struct.unpack_from(f"<{length}{kind}", self.data, where + 4)

    def bytes_vector(self, number: int) -> memoryview:
        where = self.target(number)
        if not where:
            return memoryview(b"")
        length = struct.unpack_from("<I", self.data, where)[0]
        if where + 4 + length > len(self.data):
            raise struct.error("vector beyond the end of the model")
        return memoryview(self.data)[where + 4: where + 4 + length]

    def tables(self, number: int) -> list:
        where = self.target(number)
        if not where:
            return []
        length = struct.unpack_from("<I", self.data, where)[0]
        slots = [where + 4 + 4 * item for item in range(length)]
        return [Table(self.data, slot + struct.unpack_from("<I", self.data, slot)[0]) for slot in slots]

    def string(self, number: int) -> str:
        return bytes(self.bytes_vector(number)).decode("utf-8", "replace")


def operator_code(table: Table) -> int:
    """The builtin op number: schema 3.3 moved it from a byte (deprecated_builtin_code, up to 127)
    to an int32 field, and a converter writes both, so the larger of the two is the real one."""
    return max(table.scalar(0, "b"), table.scalar(3, "i"))


def buffer_bytes(data: bytes, buffer: Table) -> memoryview:
    offset, size = buffer.scalar(1, "Q"), buffer.scalar(2, "Q")
    if offset > 1:  # Stored after the flatbuffer, at an offset from the file's start.
        if offset + size > len(data):
            raise struct.error("buffer beyond the end of the model")
        return memoryview(data)[offset: offset + size]
    return buffer.bytes_vector(0)


def read_tensor(data: bytes, index: int, table: Table, buffers: list) -> Tensor:
    type_number = table.scalar(1, "b")
    if type_number not in TENSOR_TYPES:
        raise ModelError(f"tensor {index} has TensorType {type_number}, which the numpy engine does not read")
    dtype, shape = TENSOR_TYPES[type_number], tuple(table.vector(0, "i"))
    quantization = table.table(4)
    scales = np.array(quantization.vector(2, "f") if quantization else (), np.float32)
    zero_points = np.array(quantization.vector(3, "q") if quantization else (), np.int64)
    content = buffer_bytes(data, buffers[table.scalar(2, "I")])
    values = None
    if len(content):
        values = np.frombuffer(content, dtype=dtype, count=int(np.prod(shape, dtype=np.int64))).reshape(shape)
    return Tensor(index, table.string(3), shape, tuple(table.vector(7, "i")) or shape, dtype, scales,
                  np.resize(zero_points, scales.shape), quantization.scalar(6, "i") if quantization else 0, values)


def read_model(data: bytes) -> Model:
    """The model's first subgraph; ModelError for anything that is not a readable TFLite flatbuffer."""
    if len(data) < 8 or data[4:8] != FILE_IDENTIFIER:
        raise ModelError("not a TFLite model (no TFL3 file identifier)")
    try:
        root = Table(data, struct.unpack_from("<I", data, 0)[0])
        codes = [operator_code(table) for table in root.tables(1)]
        subgraphs, buffers = root.tables(2), root.tables(4)
        if len(subgraphs) != 1:
            raise ModelError(f"the model has {len(subgraphs)} subgraphs; the numpy engine runs models with one")
        graph = subgraphs[0]
        tensors = [read_tensor(data, index, table, buffers) for index, table in enumerate(graph.tables(0))]
        operators = [Operator(codes[table.scalar(0, "I")], table.vector(1, "i"), table.vector(2, "i"), table.table(4))
                     for table in graph.tables(3)]
        return Model(tensors, graph.vector(1, "i"), graph.vector(2, "i"), operators)
    except (struct.error, IndexError, ValueError, UnicodeError) as error:
        if isinstance(error, ModelError):
            raise
        raise ModelError(f"not a readable TFLite model ({error})") from None
