"""Reading the Python pickles ilastik stores in projects without executing them.

`pickle.loads` runs whatever a pickle says (any importable callable with any arguments): a project file is
untrusted input, so it is never unpickled. `read_pickle` walks the opcodes (`pickletools.genops`) and
builds inert data only: numbers, strings, bytes, None/True/False, lists, tuples, dicts, sets. A reference
to a global becomes a `Global(module, name)` (never imported); calling one (REDUCE, NEWOBJ, INST, OBJ)
becomes a `Call(function, arguments)` whose `state` holds what BUILD would have set; persistent ids and
extensions are refused. What these inert values mean is decided by the reader of each format (e.g.
numpy arrays are rebuilt from their raw bytes and dtype there), never by the pickle.
"""

from __future__ import annotations

import pickletools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hpc_ilastik.errors import UserError

_MARK = object()


@dataclass(frozen=True)
class Global:
    """A pickled reference to `module.name`, never resolved."""

    module: str
    name: str

    def __str__(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass
class Call:
    """A pickled call of `function` (a Global, or a Call for a method) with `args`; `state` is what BUILD
    would set on the result (a dict, or a (dict, slots) tuple, or anything the class defines)."""

    function: Any
    args: tuple
    state: Any = None
    kwargs: dict = field(default_factory=dict)
    items: list = field(default_factory=list)   # APPEND/APPENDS on the result (list subclasses)
    entries: dict = field(default_factory=dict)  # SETITEM(S) on the result (dict subclasses)


def _pop_mark(stack: list) -> list:
    """The items above the topmost mark (removed with it)."""
    for i in range(len(stack) - 1, -1, -1):
        if stack[i] is _MARK:
            items = stack[i + 1:]
            del stack[i:]
            return items
    raise ValueError("MARK missing")


def _text(arg: Any) -> str:
    return arg.decode("latin-1") if isinstance(arg, bytes) else str(arg)


def _add_items(target: Any, items: list) -> None:
    if isinstance(target, list):
        target.extend(items)
    elif isinstance(target, Call):
        target.items.extend(items)
    else:
        raise ValueError(f"APPENDS on a {type(target).__name__}")


def _set_items(target: Any, pairs: list) -> None:
    if len(pairs) % 2:
        raise ValueError("SETITEMS with an odd number of items")
    for key, value in zip(pairs[::2], pairs[1::2]):
        if isinstance(target, dict):
            target[_hashable(key)] = value
        elif isinstance(target, Call):
            target.entries[_hashable(key)] = value
        else:
            raise ValueError(f"SETITEMS on a {type(target).__name__}")


def _hashable(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        raise ValueError(f"a dict key of type {type(value).__name__}") from None
    return value


_CONSTANTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}
_EMPTY = {"EMPTY_LIST": list, "EMPTY_DICT": dict, "EMPTY_TUPLE": tuple, "EMPTY_SET": set}
_VALUES = {"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT", "STRING",
           "BINSTRING", "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "BINBYTES",
           "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8"}


def _step(name: str, arg: Any, stack: list, memo: dict) -> None:
    """Apply one opcode to the stack, inertly."""
    if name in _VALUES:  # protocol 0 writes booleans as INT: pickletools already gives True/False
        stack.append(bytearray(arg) if name == "BYTEARRAY8" else arg)
    elif name in _CONSTANTS:
        stack.append(_CONSTANTS[name])
    elif name in _EMPTY:
        stack.append(_EMPTY[name]())
    elif name == "MARK":
        stack.append(_MARK)
    elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
        n = int(name[-1])
        items = tuple(stack[-n:])
        del stack[-n:]
        stack.append(items)
    elif name == "TUPLE":
        stack.append(tuple(_pop_mark(stack)))
    elif name == "LIST":
        stack.append(_pop_mark(stack))
    elif name == "DICT":
        pairs, target = _pop_mark(stack), {}
        _set_items(target, pairs)
        stack.append(target)
    elif name in ("FROZENSET", "ADDITEMS"):
        items = [_hashable(item) for item in _pop_mark(stack)]
        if name == "FROZENSET":
            stack.append(frozenset(items))
        else:
            stack[-1].update(items)
    elif name == "APPEND":
        _add_items(stack[-2], [stack.pop()])
    elif name == "APPENDS":
        items = _pop_mark(stack)
        _add_items(stack[-1], items)
    elif name == "SETITEM":
        value, key = stack.pop(), stack.pop()
        _set_items(stack[-1], [key, value])
    elif name == "SETITEMS":
        pairs = _pop_mark(stack)
        _set_items(stack[-1], pairs)
    elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
        memo[arg] = stack[-1]
    elif name == "MEMOIZE":
        memo[len(memo)] = stack[-1]
    elif name in ("GET", "BINGET", "LONG_BINGET"):
        stack.append(memo[arg])
    elif name == "GLOBAL":
        module, _, attribute = _text(arg).partition(" ")
        stack.append(Global(module, attribute))
    elif name == "STACK_GLOBAL":
        attribute, module = stack.pop(), stack.pop()
        stack.append(Global(str(module), str(attribute)))
    elif name == "REDUCE":
        args, function = stack.pop(), stack.pop()
        stack.append(Call(function, tuple(args)))
    elif name == "NEWOBJ":
        args, cls = stack.pop(), stack.pop()
        stack.append(Call(cls, tuple(args)))
    elif name == "NEWOBJ_EX":
        kwargs, args, cls = stack.pop(), stack.pop(), stack.pop()
        stack.append(Call(cls, tuple(args), kwargs=dict(kwargs)))
    elif name == "INST":
        module, _, attribute = _text(arg).partition(" ")
        stack.append(Call(Global(module, attribute), tuple(_pop_mark(stack))))
    elif name == "OBJ":
        items = _pop_mark(stack)
        stack.append(Call(items[0], tuple(items[1:])))
    elif name == "BUILD":
        state = stack.pop()
        if not isinstance(stack[-1], Call):
            raise ValueError(f"BUILD on a {type(stack[-1]).__name__}")
        stack[-1].state = state
    elif name == "POP":
        stack.pop()
    elif name == "POP_MARK":
        _pop_mark(stack)
    elif name == "DUP":
        stack.append(stack[-1])
    elif name in ("PROTO", "FRAME"):
        pass
    else:
        raise ValueError(f"the opcode {name} is not allowed")


def read_pickle(data: bytes, what: str) -> Any:
    """The inert value of a pickle; UserError (naming `what`) for a damaged pickle or a forbidden opcode."""
    stack: list = []
    memo: dict = {}
    try:
        for opcode, arg, _ in pickletools.genops(bytes(data)):
            if opcode.name == "STOP":
                if len(stack) != 1 or stack[0] is _MARK:
                    raise ValueError("unbalanced stack at STOP")
                return stack[0]
            _step(opcode.name, arg, stack, memo)
    except (ValueError, IndexError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(f"{what} is not a readable pickle ({exc}); the project is damaged") from None
    raise UserError(f"{what} is not a readable pickle (it ends before its STOP); the project is damaged")


_NUMPY_MODULES = {"numpy.core.multiarray", "numpy._core.multiarray"}
_PLAIN_KINDS = set("biufc")  # bool, integers, floats, complex: never objects


def is_global(value: Any, module: str | set[str], name: str) -> bool:
    """Whether `value` is the pickled reference `module.name` (module: one name or a set of names)."""
    modules = {module} if isinstance(module, str) else module
    return isinstance(value, Global) and value.module in modules and value.name == name


def numpy_array(value: Any, what: str) -> np.ndarray:
    """The array a pickled ndarray (numpy's `_reconstruct` call and its BUILD state) holds, rebuilt from its raw
    bytes; plain and structured dtypes of numbers only (never objects). ValueError naming `what` otherwise."""
    if not (isinstance(value, Call) and is_global(value.function, _NUMPY_MODULES, "_reconstruct")
            and value.args and is_global(value.args[0], "numpy", "ndarray")):
        raise ValueError(f"{what} is not a numpy array")
    state = value.state
    if not (isinstance(state, tuple) and len(state) == 5 and isinstance(state[4], (bytes, bytearray))):
        raise ValueError(f"{what}: a numpy array without its raw bytes (an object array?)")
    _, shape, dtype_value, fortran, data = state
    dtype = numpy_dtype(dtype_value, what)
    if not (isinstance(shape, tuple) and all(isinstance(n, int) and n >= 0 for n in shape)):
        raise ValueError(f"{what}: a numpy array of shape {shape!r}")
    count = int(np.prod(shape, dtype=np.int64))
    if len(data) != count * dtype.itemsize:
        raise ValueError(f"{what}: {len(data)} bytes for {count} elements of {dtype}")
    flat = np.frombuffer(bytes(data), dtype=dtype, count=count)
    return flat.reshape(shape, order="F" if fortran else "C").copy()


def numpy_dtype(value: Any, what: str) -> np.dtype:
    """The dtype a pickled `numpy.dtype(...)` call with its BUILD state describes: numbers, or records of them."""
    if not (isinstance(value, Call) and is_global(value.function, "numpy", "dtype") and value.args
            and isinstance(value.args[0], str)):
        raise ValueError(f"{what}: not a numpy dtype")
    state = value.state
    if not (isinstance(state, tuple) and len(state) >= 6):
        raise ValueError(f"{what}: a numpy dtype without its state")
    order, names, fields, itemsize = state[1], state[3], state[4], state[5]
    if names is None:
        dtype = np.dtype(value.args[0])
        if dtype.kind not in _PLAIN_KINDS:
            raise ValueError(f"{what}: numpy dtype {value.args[0]!r} is not a number type")
        return dtype.newbyteorder(order) if order in ("<", ">") else dtype
    if not (isinstance(names, tuple) and isinstance(fields, dict) and set(names) == set(fields)
            and isinstance(itemsize, int)):
        raise ValueError(f"{what}: a damaged record dtype")
    formats, offsets = [], []
    for name in names:
        field_value = fields[name]
        if not (isinstance(field_value, tuple) and len(field_value) >= 2 and isinstance(field_value[1], int)):
            raise ValueError(f"{what}: a damaged record field {name!r}")
        formats.append(numpy_dtype(field_value[0], what))
        offsets.append(field_value[1])
    return np.dtype({"names": list(names), "formats": formats, "offsets": offsets, "itemsize": itemsize})
