"""Change tracking for the workflow's state: what an input changed, to take it back or to journal it.

A state class (a dataclass deriving from `Tracked`) names each of its fields with a `FieldSpec`. Once a machine
adopts a state, its dict, set and list fields are `TrackedDict`/`TrackedSet`/`TrackedList` and every write (an
attribute assignment or a container write) is noted in the state's `ChangeLog`:

- while an input is handled, as an undo step (a rejected input, a bug in a handler or a failed commit puts
  the state back exactly as it was, with no copy of the state made beforehand);
- until the next `drain()`, as a dirty (field, key): `drain()` returns a delta holding the current value of
  just those entries, which `apply_delta()` replays onto a state restored from an older snapshot.

Both costs follow what an input touched, not the size of the route.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from functools import partial
from typing import AbstractSet, Any, Callable, ClassVar, Iterable, Mapping, Self

_MISSING = object()
_WHOLE = object()  # the key of a dirty entry that stands for the whole field

Undo = Callable[[], None]
Delta = dict[str, dict[str, Any]]  # {"set": {field: whole}, "put": {field: {key: item}}, "del": {field: [keys]}}


class Kind(enum.Enum):
    VALUE = "value"  # replaced, never mutated in place (enums, strings, frozen objects, documents)
    DICT = "dict"  # str keys; items replaced, never mutated in place
    SET = "set"  # of str
    LIST = "list"  # small; any change journals the whole list


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class FieldSpec:
    """How one field of a state is journaled: its kind and the JSON codec of a value (VALUE) or an item (DICT)."""

    kind: Kind = Kind.VALUE
    encode: Callable[[Any], Any] = _same
    decode: Callable[[Any], Any] = _same

    def encode_whole(self, value: Any) -> Any:
        if value is None:
            return None
        if self.kind is Kind.DICT:
            return {k: self.encode(v) for k, v in value.items()}
        if self.kind is Kind.SET:
            return sorted(value)
        if self.kind is Kind.LIST:
            return list(value)
        return self.encode(value)

    def decode_whole(self, raw: Any) -> Any:
        if raw is None:
            return None
        if self.kind is Kind.DICT:
            return {k: self.decode(v) for k, v in raw.items()}
        if self.kind is Kind.SET:
            return set(raw)
        if self.kind is Kind.LIST:
            return list(raw)
        return self.decode(raw)


def value(encode: Callable[[Any], Any] = _same, decode: Callable[[Any], Any] = _same) -> FieldSpec:
    return FieldSpec(Kind.VALUE, encode, decode)


def mapping(encode: Callable[[Any], Any] = _same, decode: Callable[[Any], Any] = _same) -> FieldSpec:
    return FieldSpec(Kind.DICT, encode, decode)


SET = FieldSpec(Kind.SET)
LIST = FieldSpec(Kind.LIST)


class ChangeLog:
    """Undo steps of the input being handled, and the entries changed since the last drain."""

    def __init__(self) -> None:
        self._undo: list[Undo] | None = None
        self._dirty: dict[tuple[str, Any], None] = {}
        self.everything = True  # a state just adopted: only a full snapshot describes it

    def note(self, field: str, key: Any, undo: Undo) -> None:
        if self._undo is not None:
            self._undo.append(undo)
        self._dirty[(field, key)] = None

    def begin(self) -> None:
        self._undo = []

    def commit(self) -> list[Undo]:
        """End the input; its undo steps are returned (to take it back after a failed commit)."""
        steps, self._undo = self._undo or [], None
        return steps

    def rollback(self) -> None:
        undo(self.commit())

    def drain(self, state: Tracked) -> Delta | None:
        """The entries changed since the last drain with their current values; None when only a full snapshot
        will do (the state was just adopted)."""
        dirty, self._dirty = self._dirty, {}
        if self.everything:
            self.everything = False
            return None
        specs = state.FIELDS
        whole = {f for f, key in dirty if key is _WHOLE}
        delta: Delta = {}
        for name in whole:
            delta.setdefault("set", {})[name] = specs[name].encode_whole(getattr(state, name))
        for name, key in dirty:
            if name in whole:
                continue
            container = getattr(state, name)
            if key in container:
                spec = specs[name]
                item = True if spec.kind is Kind.SET else spec.encode(container[key])
                delta.setdefault("put", {}).setdefault(name, {})[key] = item
            else:
                delta.setdefault("del", {}).setdefault(name, []).append(key)
        return delta


def undo(steps: list[Undo]) -> None:
    for step in reversed(steps):
        step()


def _restore_item(container: dict[str, Any], key: Any, old: Any) -> None:
    if old is _MISSING:
        dict.pop(container, key, None)
    else:
        dict.__setitem__(container, key, old)


def _restore_removed(container: dict[str, Any], key: Any, old: Any, index: int) -> None:
    """Put a removed entry back where it was: a dict's order is part of the state (offers are listed in it)."""
    items = list(dict.items(container))
    items.insert(index, (key, old))
    dict.clear(container)
    dict.update(container, items)


def _restore_member(container: set[str], key: Any, was: bool) -> None:
    (set.add if was else set.discard)(container, key)


def _restore_dict(container: dict[str, Any], old: dict[str, Any]) -> None:
    dict.clear(container)
    dict.update(container, old)


def _restore_set(container: set[str], old: set[str]) -> None:
    set.clear(container)
    set.update(container, old)


def _restore_list(container: list[Any], old: list[Any]) -> None:
    list.clear(container)
    list.extend(container, old)


class TrackedDict(dict[str, Any]):
    """A dict whose writes are noted in a ChangeLog. Copies (copy, deepcopy, pickle) are plain dicts."""

    __slots__ = ("_log", "_field")

    def __init__(self, data: Mapping[str, Any], log: ChangeLog, field: str) -> None:
        dict.__init__(self, data)
        self._log = log
        self._field = field

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return dict, (dict(self),)

    def __setitem__(self, key: Any, item: Any) -> None:
        self._log.note(self._field, key, partial(_restore_item, self, key, dict.get(self, key, _MISSING)))
        dict.__setitem__(self, key, item)

    def __delitem__(self, key: Any) -> None:
        old = dict.__getitem__(self, key)  # KeyError as a dict would
        self._note_removal(key, old)
        dict.__delitem__(self, key)

    def pop(self, key: Any, *default: Any) -> Any:
        if key in self:
            self._note_removal(key, dict.__getitem__(self, key))
        return dict.pop(self, key, *default)

    def _note_removal(self, key: Any, old: Any) -> None:
        # O(entries) for the position; removals are rare (a refused claim's offer, a restaged package)
        index = list(dict.keys(self)).index(key)
        self._log.note(self._field, key, partial(_restore_removed, self, key, old, index))

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return dict.__getitem__(self, key)

    def _whole_change(self) -> None:
        self._log.note(self._field, _WHOLE, partial(_restore_dict, self, dict(self)))

    def update(self, *args: Any, **kwargs: Any) -> None:
        self._whole_change()
        dict.update(self, *args, **kwargs)

    def clear(self) -> None:
        self._whole_change()
        dict.clear(self)

    def popitem(self) -> tuple[Any, Any]:
        self._whole_change()
        return dict.popitem(self)

    def __ior__(self, other: Any) -> Self:  # type: ignore[misc,override]
        self.update(other)
        return self


class TrackedSet(set[str]):
    """A set whose writes are noted in a ChangeLog. Copies are plain sets."""

    __slots__ = ("_log", "_field")

    def __init__(self, data: Iterable[str], log: ChangeLog, field: str) -> None:
        set.__init__(self, data)
        self._log = log
        self._field = field

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return set, (set(self),)

    def add(self, key: Any) -> None:
        self._log.note(self._field, key, partial(_restore_member, self, key, key in self))
        set.add(self, key)

    def discard(self, key: Any) -> None:
        self._log.note(self._field, key, partial(_restore_member, self, key, key in self))
        set.discard(self, key)

    def remove(self, key: Any) -> None:
        if key not in self:
            raise KeyError(key)
        self.discard(key)

    def _whole_change(self) -> None:
        self._log.note(self._field, _WHOLE, partial(_restore_set, self, set(self)))

    def update(self, *others: Iterable[str]) -> None:
        self._whole_change()
        set.update(self, *others)

    def clear(self) -> None:
        self._whole_change()
        set.clear(self)

    def pop(self) -> Any:
        self._whole_change()
        return set.pop(self)

    def difference_update(self, *others: Iterable[Any]) -> None:
        self._whole_change()
        set.difference_update(self, *others)

    def intersection_update(self, *others: Iterable[Any]) -> None:
        self._whole_change()
        set.intersection_update(self, *others)

    def symmetric_difference_update(self, other: Iterable[str]) -> None:
        self._whole_change()
        set.symmetric_difference_update(self, other)

    def __ior__(self, other: AbstractSet[str]) -> Self:  # type: ignore[misc,override]
        self.update(other)
        return self

    def __iand__(self, other: AbstractSet[object]) -> Self:
        self.intersection_update(other)
        return self

    def __isub__(self, other: AbstractSet[object]) -> Self:
        self.difference_update(other)
        return self

    def __ixor__(self, other: AbstractSet[str]) -> Self:  # type: ignore[misc,override]
        self.symmetric_difference_update(other)
        return self


class TrackedList(list[Any]):
    """A small list whose every change journals the whole list. Copies are plain lists."""

    __slots__ = ("_log", "_field")

    def __init__(self, data: Iterable[Any], log: ChangeLog, field: str) -> None:
        list.__init__(self, data)
        self._log = log
        self._field = field

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return list, (list(self),)

    def _whole_change(self) -> None:
        self._log.note(self._field, _WHOLE, partial(_restore_list, self, list(self)))

    def append(self, item: Any) -> None:
        self._whole_change()
        list.append(self, item)

    def extend(self, items: Iterable[Any]) -> None:
        self._whole_change()
        list.extend(self, items)

    def insert(self, index: Any, item: Any) -> None:
        self._whole_change()
        list.insert(self, index, item)

    def remove(self, item: Any) -> None:
        self._whole_change()
        list.remove(self, item)

    def pop(self, index: Any = -1) -> Any:
        self._whole_change()
        return list.pop(self, index)

    def clear(self) -> None:
        self._whole_change()
        list.clear(self)

    def sort(self, *args: Any, **kwargs: Any) -> None:
        self._whole_change()
        list.sort(self, *args, **kwargs)

    def reverse(self) -> None:
        self._whole_change()
        list.reverse(self)

    def __setitem__(self, index: Any, item: Any) -> None:
        self._whole_change()
        list.__setitem__(self, index, item)

    def __delitem__(self, index: Any) -> None:
        self._whole_change()
        list.__delitem__(self, index)

    def __iadd__(self, items: Iterable[Any]) -> Self:  # type: ignore[misc]
        self.extend(items)
        return self

    def __imul__(self, count: Any) -> Self:  # type: ignore[misc]
        self._whole_change()
        return list.__imul__(self, count)


_CONTAINERS: dict[Kind, Callable[[Any, ChangeLog, str], Any]] = {
    Kind.DICT: TrackedDict, Kind.SET: TrackedSet, Kind.LIST: TrackedList}


class Tracked:
    """Base of a journaled state dataclass: FIELDS names every dataclass field's FieldSpec."""

    FIELDS: ClassVar[Mapping[str, FieldSpec]]

    def __setattr__(self, name: str, new: Any) -> None:
        log: ChangeLog | None = self.__dict__.get("_changes")
        if log is not None:
            spec = self.FIELDS.get(name)
            if spec is not None:
                new = _wrap(spec, new, log, name)
                log.note(name, _WHOLE, partial(object.__setattr__, self, name, self.__dict__.get(name)))
        object.__setattr__(self, name, new)


def _wrap(spec: FieldSpec, data: Any, log: ChangeLog, name: str) -> Any:
    container = _CONTAINERS.get(spec.kind)
    return data if container is None or data is None else container(data, log, name)


def adopt(state: Tracked) -> ChangeLog:
    """Start tracking `state` (its containers are replaced by tracked copies); returns its new log."""
    names = {f.name for f in fields(state)}  # type: ignore[arg-type]
    if names != set(state.FIELDS):
        raise TypeError(f"{type(state).__name__}.FIELDS does not match its fields: {sorted(names ^ set(state.FIELDS))}")
    log = ChangeLog()
    object.__setattr__(state, "_changes", None)
    for name, spec in state.FIELDS.items():
        object.__setattr__(state, name, _wrap(spec, getattr(state, name), log, name))
    object.__setattr__(state, "_changes", log)
    return log


def apply_delta(state: Tracked, delta: Mapping[str, Any]) -> None:
    """Replay a `ChangeLog.drain()` delta onto a state; raises KeyError/TypeError/ValueError on a damaged one."""
    specs = state.FIELDS
    for name, raw in delta.get("set", {}).items():
        setattr(state, name, specs[name].decode_whole(raw))
    for name, items in delta.get("put", {}).items():
        spec, container = specs[name], getattr(state, name)
        for key, raw in items.items():
            if spec.kind is Kind.SET:
                container.add(key)
            else:
                container[key] = spec.decode(raw)
    for name, keys in delta.get("del", {}).items():
        container = getattr(state, name)
        for key in keys:
            if specs[name].kind is Kind.SET:
                container.discard(key)
            else:
                container.pop(key, None)
