"""Immutable records: a tuple whose fields have names, declared as annotations.

typing.NamedTuple and dataclasses generate and compile code for every class at import, which every
run of the command and every spawn server pays for (a message kind costs about 0.2 ms that way).
A Record's fields are properties over tuple items, made when the class is made, without exec.

    class Step(Record):
        kind: str
        target: str
        source: str | None = None     # a default

The annotations also say what a field may hold when the record comes from another process:
from_plain() checks and converts every field by them (converters()), refusing anything else with
ValueError, so that a record received is well-typed. They are read on first use, as strings, without
typing: int, float (an int too), bool, str, bytes, None, unions, list[X], tuple[X, ...], tuple[X, Y],
dict[K, V], Any (plain data as it came), and classes: a Record, an enum, or a class with from_wire().
"""

from __future__ import annotations

from operator import itemgetter

TYPE_CHECKING = False  # typing stays out of the spawn server, whose every reaper is a fork of it
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


class Record(tuple):
    __slots__ = ()
    _fields: tuple[str, ...] = ()
    _defaults: dict[str, Any] = {}
    _converters: tuple | None = None  # per class, from its annotations on first use
    KIND: Any = None  # a message kind (wire.py): its plain form is (kind, *fields)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = tuple(cls.__dict__.get("__annotations__", {}))
        defaults = dict(cls._defaults)
        for name in own:
            if name in cls.__dict__:
                defaults[name] = cls.__dict__[name]
        cls._fields = cls._fields + own
        cls._defaults = defaults
        for index, name in enumerate(cls._fields):
            setattr(cls, name, property(itemgetter(index)))
        cls._converters = None

    @classmethod
    def from_plain(cls, values: Any) -> Any:
        """The record whose fields are values (a tuple or list, after its KIND if it has one; fields with a default
        may be missing), each checked and converted by its annotation; ValueError for anything else."""
        converters = cls._converters
        if converters is None:
            converters = cls._converters = _converters_of(cls)
        kind = type(values)
        if kind is not tuple and kind is not list:
            raise ValueError(f"{cls.__name__}: not a record")
        if cls.KIND is not None:
            if not values or type(values[0]) is not int or values[0] != cls.KIND:
                raise ValueError(f"not a {cls.__name__}")
            values = values[1:]
        given = len(values)
        if given > len(converters) or (given < len(converters) and cls._fields[given] not in cls._defaults):
            raise ValueError(f"{cls.__name__}: {given} fields")
        fields = [value if type(value) in passes else convert(value)
                  for (passes, convert), value in zip(converters, values, strict=False)]
        if given < len(converters):
            fields += [cls._defaults[name] for name in cls._fields[given:]]
        return tuple.__new__(cls, fields)

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        fields = cls._fields
        if len(args) > len(fields):
            raise TypeError(f"{cls.__name__} takes {len(fields)} fields, not {len(args)}")
        if len(args) < len(fields) or kwargs:
            missing = fields[len(args):]
            try:
                args = (*args, *(kwargs.pop(name) if name in kwargs else cls._defaults[name] for name in missing))
            except KeyError as exc:
                raise TypeError(f"{cls.__name__} needs {exc.args[0]}") from None
            if kwargs:
                raise TypeError(f"{cls.__name__} has no field {next(iter(kwargs))!r}")
        return tuple.__new__(cls, args)

    def replace(self, **changes: Any) -> Any:
        """A copy with these fields changed."""
        unknown = set(changes) - set(self._fields)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field {unknown.pop()!r}")
        values = zip(self._fields, self, strict=True)
        return tuple.__new__(type(self), (changes.get(name, value) for name, value in values))

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in zip(self._fields, self, strict=True))
        return f"{type(self).__name__}({fields})"

    def __getnewargs__(self) -> tuple:
        return tuple(self)


def _converters_of(cls: type) -> tuple:
    annotations: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        annotations.update(klass.__dict__.get("__annotations__", {}))
    return converters(annotations, cls._fields, cls.__module__)


def converters(annotations: dict[str, Any], fields: tuple[str, ...], module: str) -> tuple:
    """One converter per field, from its annotation (a string, names as module sees them): the types whose values
    pass as they are (a set: cheaper to ask than to call), and a function that gives the value checked and
    converted, or raises ValueError. TypeError for an annotation it does not know."""
    import builtins
    import sys

    names = {**vars(builtins), **vars(sys.modules[module])}
    missing = [field for field in fields if field not in annotations]
    if missing:
        raise TypeError(f"no annotation for {', '.join(missing)}")
    made = []
    for field in fields:
        text = str(annotations[field])
        key = (text, module)
        if key not in _MADE:
            _MADE[key] = _converter(text, names)
        made.append(_MADE[key])
    return tuple((getattr(convert, "passes", frozenset()), convert) for convert in made)


_MADE: dict[tuple[str, str], Any] = {}  # converters by annotation and module: many fields share one


def _split(text: str, separator: str) -> list[str]:
    """text split at separator outside brackets."""
    if separator not in text:
        return [text.strip()]
    if "[" not in text:
        return [part.strip() for part in text.split(separator)]
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif char == separator and depth == 0:
            parts.append(text[start:index].strip())
            start = index + 1
    parts.append(text[start:].strip())
    return parts


def _refuse(value: Any, what: str) -> Any:
    raise ValueError(f"{what} expected, not {type(value).__name__}")


def _exact(kind: type) -> Callable[[Any], Any]:
    name = kind.__name__

    def convert(value: Any) -> Any:
        return value if type(value) is kind else _refuse(value, name)
    convert.exact = kind  # type: ignore[attr-defined]
    convert.passes = frozenset((kind,))  # type: ignore[attr-defined]
    return convert


def _float(value: Any) -> float:
    kind = type(value)
    if kind is float:
        return value
    if kind is not int:
        return _refuse(value, "float")
    try:
        return float(value)
    except OverflowError:
        raise ValueError("an int too large for a float") from None


def _none(value: Any) -> None:
    return None if value is None else _refuse(value, "None")


def _any(value: Any) -> Any:
    return value


_float.passes = frozenset((float,))  # type: ignore[attr-defined]
_none.passes = frozenset((type(None),))  # type: ignore[attr-defined]


def _converter(text: str, names: dict[str, Any]) -> Callable[[Any], Any]:
    alternatives = _split(text, "|")
    if len(alternatives) > 1:
        converts = [_converter(alternative, names) for alternative in alternatives]
        if len(converts) == 2 and _none in converts:
            other = converts[1 - converts.index(_none)]

            def maybe(value: Any) -> Any:
                return None if value is None else other(value)
            maybe.passes = _none.passes | getattr(other, "passes", frozenset())  # type: ignore[attr-defined]
            return maybe

        def either(value: Any) -> Any:
            for convert in converts:
                try:
                    return convert(value)
                except ValueError:
                    pass
            raise ValueError(f"{text} expected, not {type(value).__name__}")
        either.passes = frozenset().union(*(getattr(c, "passes", ()) for c in converts))  # type: ignore[attr-defined]
        return either
    if text == "None":
        return _none
    if text == "float":
        return _float
    if text == "Any":
        return _any
    outer, _, inner = text.partition("[")
    if inner:
        args = _split(inner[:-1], ",")
        container = names[outer]
        if container is dict:
            return _dict(_converter(args[0], names), _converter(args[1], names))
        if container is list or (container is tuple and len(args) == 2 and args[1] == "..."):
            return _sequence(container, _converter(args[0], names))
        if container is tuple:
            return _fixed([_converter(arg, names) for arg in args])
        raise TypeError(f"no converter for {text}")
    kind = names.get(text)
    if kind in (int, bool, str, bytes):
        return _exact(kind)
    if kind in (tuple, list, dict):  # plain data, as it came
        return lambda value: value if type(value) is kind else _refuse(value, text)
    if isinstance(kind, type) and issubclass(kind, Record):
        return kind.from_plain
    if isinstance(kind, type) and hasattr(kind, "_value2member_map_"):  # an enum: its value
        return kind
    if hasattr(kind, "from_wire"):
        return kind.from_wire
    raise TypeError(f"no converter for {text}")


def _sequence(kind: type, item: Callable[[Any], Any]) -> Callable[[Any], Any]:
    exact = getattr(item, "exact", None)

    def convert(value: Any) -> Any:
        given = type(value)
        if given is not list and given is not tuple:
            return _refuse(value, kind.__name__)
        if exact is not None or not value:
            for one in value:
                if type(one) is not exact:
                    _refuse(one, exact.__name__)
            return value if given is kind else kind(value)
        return kind([item(one) for one in value])
    return convert


def _fixed(items: list[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    count = len(items)

    def convert(value: Any) -> Any:
        if (type(value) is not tuple and type(value) is not list) or len(value) != count:
            return _refuse(value, f"a tuple of {count}")
        return tuple([item(one) for item, one in zip(items, value, strict=True)])
    return convert


def _dict(key: Callable[[Any], Any], item: Callable[[Any], Any]) -> Callable[[Any], Any]:
    key_exact, item_exact = getattr(key, "exact", None), getattr(item, "exact", None)

    def convert(value: Any) -> Any:
        if type(value) is not dict:
            return _refuse(value, "dict")
        if key_exact is not None and (item_exact is not None or item is _any):
            for one, other in value.items():
                if type(one) is not key_exact or (item_exact is not None and type(other) is not item_exact):
                    _refuse(one, "another key or value")
            return value
        return {key(one): item(other) for one, other in value.items()}
    return convert
