"""Immutable records: a tuple whose fields have names, declared as annotations.

typing.NamedTuple and dataclasses generate and compile code for every class at import, which every
run of the command and every spawn server pays for (a message kind costs about 0.2 ms that way).
A Record's fields are properties over tuple items, made when the class is made, without exec.

    class Mount(Record):
        kind: str
        target: str
        source: str | None = None     # a default
"""

from __future__ import annotations

from operator import itemgetter

TYPE_CHECKING = False  # typing stays out of the spawn server, whose every reaper is a fork of it
if TYPE_CHECKING:
    from typing import Any


class Record(tuple):
    __slots__ = ()
    _fields: tuple[str, ...] = ()
    _defaults: dict[str, Any] = {}

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
