"""The model's flatbuffer checked whole, within bounds, before any interpreter sees it.

Interpreters trust the file they are given: tflite-runtime follows an offset past the end of a
truncated model, or through a flipped bit, and dies of SIGSEGV without a word. So every table,
vtable, vector and string that the TFLite schema (tensorflow/lite/schema/schema.fbs) lets an
interpreter reach is checked here to lie inside the file and be aligned as flatbuffers requires,
then every index between them (tensor, buffer, operator code, subgraph) to point at something that
exists, and every constant to hold as many bytes as its shape says. What passes can still compute
nonsense (the self-test finds that), but no reader of it leaves the file.
"""

from __future__ import annotations

import math
import struct

from . import tflite_reader
from .common import ModelError

# Field kinds: an int is a scalar of that many bytes; STRING; (VECTOR, n) a vector of n-byte scalars;
# "Name" a table; ["Name"] a vector of tables; (UNION, type field, union) a table chosen by a type field.
STRING, VECTOR, UNION = "string", "vector", "union"
TABLES = {
    "Model": {0: 4, 1: ["OperatorCode"], 2: ["SubGraph"], 3: STRING, 4: ["Buffer"], 5: (VECTOR, 4),
              6: ["Metadata"], 7: ["SignatureDef"]},
    "OperatorCode": {0: 1, 1: STRING, 2: 4, 3: 4},
    "SubGraph": {0: ["Tensor"], 1: (VECTOR, 4), 2: (VECTOR, 4), 3: ["Operator"], 4: STRING},
    "Tensor": {0: (VECTOR, 4), 1: 1, 2: 4, 3: STRING, 4: "QuantizationParameters", 5: 1,
               6: "SparsityParameters", 7: (VECTOR, 4), 8: 1, 9: ["VariantSubType"]},
    "VariantSubType": {0: (VECTOR, 4), 1: 1, 2: 1},
    "QuantizationParameters": {0: (VECTOR, 4), 1: (VECTOR, 4), 2: (VECTOR, 4), 3: (VECTOR, 8), 4: 1,
                               5: (UNION, 4, "QuantizationDetails"), 6: 4},
    "CustomQuantization": {0: (VECTOR, 1)},
    "SparsityParameters": {0: (VECTOR, 4), 1: (VECTOR, 4), 2: ["DimensionMetadata"]},
    "DimensionMetadata": {0: 1, 1: 4, 2: 1, 3: (UNION, 2, "SparseIndexVector"), 4: 1,
                          5: (UNION, 4, "SparseIndexVector")},
    "Int32Vector": {0: (VECTOR, 4)}, "Uint16Vector": {0: (VECTOR, 2)}, "Uint8Vector": {0: (VECTOR, 1)},
    "Operator": {0: 4, 1: (VECTOR, 4), 2: (VECTOR, 4), 3: 1, 4: (UNION, 3, "BuiltinOptions"), 5: (VECTOR, 1),
                 6: 1, 7: (VECTOR, 1), 8: (VECTOR, 4), 9: 8, 10: 8, 11: 1, 12: (UNION, 11, "BuiltinOptions2")},
    "Buffer": {0: (VECTOR, 1), 1: 8, 2: 8},
    "Metadata": {0: STRING, 1: 4},
    "TensorMap": {0: STRING, 1: 4},
    "SignatureDef": {0: ["TensorMap"], 1: ["TensorMap"], 2: STRING, 3: STRING, 4: 4},
    # The builtin options that hold more than scalars; the others are checked as "Scalars".
    "ConcatEmbeddingsOptions": {0: 4, 1: (VECTOR, 4), 2: (VECTOR, 4)},
    "ReshapeOptions": {0: (VECTOR, 4)},
    "SqueezeOptions": {0: (VECTOR, 4)},
    "VarHandleOptions": {0: STRING, 1: STRING},
    "BucketizeOptions": {0: (VECTOR, 4)},
    "Scalars": {},  # Fields of unknown size: each must start inside its table.
}
BUILTIN_OPTIONS = 126  # The union BuiltinOptions' last type; numbers above it are not options.
UNIONS = {
    "QuantizationDetails": {1: "CustomQuantization"},
    "SparseIndexVector": {1: "Int32Vector", 2: "Uint16Vector", 3: "Uint8Vector"},
    "BuiltinOptions": {number: "Scalars" for number in range(1, BUILTIN_OPTIONS + 1)}
    | {3: "ConcatEmbeddingsOptions", 17: "ReshapeOptions", 30: "SqueezeOptions", 111: "VarHandleOptions",
       115: "BucketizeOptions"},
    "BuiltinOptions2": {},  # StableHLO options: none of this board's models has them; refused.
}
# TensorType number -> bytes per element (schema.fbs enum TensorType); 0 for strings and
# resources, whose size is not their shape's; INT4 is half a byte.
ELEMENT_BYTES = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 5: 0, 6: 1, 7: 2, 8: 8, 9: 1, 10: 8, 11: 16, 12: 8, 13: 0,
                 14: 0, 15: 4, 16: 2, 17: 0.5, 18: 2}
MAX_TABLES = 100_000  # The models this board runs have under a hundred; a forged file could repeat one forever.
MAX_TENSOR_BYTES = 64 * 2**20  # Far above a 28x28 classifier's tensors; a flipped bit in a shape is not.


class Checker:
    """Walks the flatbuffer from its root, table by table, as the schema allows an interpreter to."""

    def __init__(self, data: bytes):
        self.data, self.checked = data, set()

    def fail(self, what: str):
        raise ModelError(f"the model's {what} is corrupt: the file is truncated or altered; copy the bundle again")

    def scalar(self, kind: str, position: int, what: str):
        size = struct.calcsize(kind)
        if position < 0 or position + size > len(self.data) or position % size:
            self.fail(what)
        return struct.unpack_from("<" + kind, self.data, position)[0]

    def offset(self, position: int, what: str) -> int:
        """Where the uoffset at `position` points: forward, inside the file."""
        step = self.scalar("I", position, what)
        if not 0 < step < 2**31 or position + step >= len(self.data):
            self.fail(what)
        return position + step

    def vector(self, position: int, element_bytes: int, what: str) -> int:
        """The length of the vector at `position`, all of whose elements lie inside the file."""
        length = self.scalar("I", position, what)
        if position + 4 + length * element_bytes > len(self.data):
            self.fail(what)
        return length

    def table(self, position: int, name: str) -> None:
        if (position, name) in self.checked:
            return
        self.checked.add((position, name))
        if len(self.checked) > MAX_TABLES:
            self.fail("structure (too many tables)")
        vtable = position - self.scalar("i", position, name)
        vtable_size, table_size = self.scalar("H", vtable, name), self.scalar("H", vtable + 2, name)
        if vtable_size < 4 or vtable_size % 2 or table_size < 4 or position + table_size > len(self.data) \
                or vtable + vtable_size > len(self.data):
            self.fail(name)
        fields = TABLES[name]
        for number in range((vtable_size - 4) // 2):
            where = self.scalar("H", vtable + 4 + 2 * number, name)
            if where:
                self.field(position, where, table_size, fields.get(number), f"{name} field {number}")

    def field(self, table: int, where: int, table_size: int, kind, what: str) -> None:
        size = kind if isinstance(kind, int) else 1 if kind is None else 4
        if where + size > table_size:
            self.fail(what)
        position = table + where
        if kind is None:
            return
        if isinstance(kind, int):
            self.scalar({1: "B", 2: "H", 4: "I", 8: "Q"}[kind], position, what)
        elif kind == STRING:
            target = self.offset(position, what)
            length = self.vector(target, 1, what)
            if target + 4 + length >= len(self.data) or self.data[target + 4 + length] != 0:
                self.fail(what)
            try:  # Interpreters hand names to Python as UTF-8.
                self.data[target + 4: target + 4 + length].decode("utf-8")
            except UnicodeDecodeError:
                self.fail(what)
        elif isinstance(kind, str):
            self.table(self.offset(position, what), kind)
        elif isinstance(kind, list):
            target = self.offset(position, what)
            for item in range(self.vector(target, 4, what)):
                self.table(self.offset(target + 4 + 4 * item, what), kind[0])
        elif kind[0] == VECTOR:
            self.vector(self.offset(position, what), kind[1], what)
        elif kind[0] == UNION:
            self.union(table, table_size, position, kind, what)

    def union(self, table: int, table_size: int, position: int, kind: tuple, what: str) -> None:
        _, type_field, union = kind
        vtable = table - self.scalar("i", table, what)
        entry = vtable + 4 + 2 * type_field
        type_where = self.scalar("H", entry, what) if entry + 2 <= vtable + self.scalar("H", vtable, what) else 0
        number = self.data[table + type_where] if type_where and type_where < table_size else 0
        if number:
            if number not in UNIONS[union]:
                self.fail(f"{what} ({union} type {number})")
            self.table(self.offset(position, what), UNIONS[union][number])


def check_structure(data: bytes) -> None:
    """ModelError unless every part an interpreter can reach lies inside `data`, aligned."""
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelError("not a TFLite model (no TFL3 file identifier)")
    checker = Checker(data)
    checker.table(checker.offset(0, "root"), "Model")


def check_references(data: bytes) -> None:
    """ModelError unless every index points at something that exists and every constant fills its
    shape; `data` has passed check_structure, so tflite_reader's Table reads it safely."""
    root = tflite_reader.Table(data, struct.unpack_from("<I", data, 0)[0])
    codes, subgraphs, buffers = root.tables(1), root.tables(2), root.tables(4)
    for buffer in buffers:
        offset, size = buffer.scalar(1, "Q"), buffer.scalar(2, "Q")
        if offset > 1 and offset + size > len(data):
            raise ModelError("a buffer of the model lies beyond its end: the file is truncated; copy the bundle again")
    graphs = [graph.tables(0) for graph in subgraphs]
    for graph, tensors in zip(subgraphs, graphs):
        for index, tensor in enumerate(tensors):
            check_tensor(index, tensor, buffers)
        within(graph.vector(1, "i") + graph.vector(2, "i"), len(tensors), "a subgraph's input or output")
        for operator in graph.tables(3):
            within([operator.scalar(0, "I")], len(codes), "an operator's code")
            within(operator.vector(1, "i") + operator.vector(2, "i") + operator.vector(8, "i"), len(tensors),
                   "an operator's tensor", optional=True)
    within(root.vector(5, "i") + tuple(metadata.scalar(1, "I") for metadata in root.tables(6)), len(buffers),
           "a metadata buffer")
    for signature in root.tables(7):
        graph = signature.scalar(4, "I")
        within([graph], len(subgraphs), "a signature's subgraph")
        within([item.scalar(1, "I") for item in signature.tables(0) + signature.tables(1)], len(graphs[graph]),
               "a signature's tensor")


def within(indices, count: int, what: str, optional: bool = False) -> None:
    """ModelError unless each index is in range(count); -1 too when the index is optional."""
    for index in indices:
        if not (-1 if optional else 0) <= index < count:
            raise ModelError(f"{what} is {index}, outside the model's {count}: the file is altered; "
                             "copy the bundle again")


def check_tensor(index: int, tensor: tflite_reader.Table, buffers: list) -> None:
    """A tensor's type, shape, buffer and quantization, each consistent with the others."""
    type_number, shape, buffer = tensor.scalar(1, "b"), tensor.vector(0, "i"), tensor.scalar(2, "I")
    if type_number not in ELEMENT_BYTES or min(shape, default=0) < 0 or min(tensor.vector(7, "i"), default=0) < -1:
        raise ModelError(f"tensor {index} of the model has type {type_number} and shape {list(shape)}: "
                         "the file is altered")
    within([buffer], len(buffers), f"tensor {index}'s buffer")
    size = math.prod(shape) * ELEMENT_BYTES[type_number]
    if size > MAX_TENSOR_BYTES:
        raise ModelError(f"tensor {index} of the model needs {size / 2**20:.0f} MB, over the "
                         f"{MAX_TENSOR_BYTES // 2**20} MB a board allows: the file is altered")
    content = tflite_reader.buffer_bytes(tensor.data, buffers[buffer])
    if len(content) and ELEMENT_BYTES[type_number] and tensor.table(6) is None and len(content) != math.ceil(size):
        raise ModelError(f"tensor {index} of the model holds {len(content)} bytes, its shape {list(shape)} needs "
                         f"{math.ceil(size)}: the file is truncated or altered")
    quantization = tensor.table(4)
    scales = quantization.vector(2, "f") if quantization else ()
    zero_points = quantization.vector(3, "q") if quantization else ()
    dimension = quantization.scalar(6, "i") if quantization else 0
    if not all(map(math.isfinite, scales)) or (zero_points and len(zero_points) != len(scales)) or (
            len(scales) > 1 and not (0 <= dimension < len(shape) and shape[dimension] == len(scales))):
        raise ModelError(f"tensor {index} of the model has {len(scales)} scales and {len(zero_points)} zero points "
                         f"along dimension {dimension} of {list(shape)}: the file is altered")


def check_model(data: bytes) -> None:
    """ModelError, one line, for a model that an interpreter could read outside its bytes."""
    check_structure(data)
    check_references(data)
