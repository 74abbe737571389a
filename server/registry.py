"""Named functions: the registry, its decorator, and JSON argument binding.

An operator exposes functions from their own module::

    from server.registry import function

    @function
    def word_count(text: str, lower: bool = True) -> int:
        \"\"\"Count the words in ``text``.\"\"\"
        ...

and starts the server with ``--functions my_module`` (or lists the module in
the ``dask_compute.functions`` entry-point group). Parameters and their JSON
types come from the signature and type hints; JSON values are converted to the
annotated types, and a value of the wrong type is refused before anything runs.

A function decorated with ``@function(lazy=True)`` builds a Dask collection
cheaply and returns it; the service then computes that collection on the job's
scheduler (``pi`` works this way). Any other function runs as one task on the
job's scheduler.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import logging
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib.metadata import entry_points
from typing import Any

from server.errors import FunctionNotFound, InvalidArgument

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "dask_compute.functions"

_MAX_SAFE_INT = 2**53


@dataclasses.dataclass(frozen=True)
class ParameterSpec:
    """One parameter of a named function."""

    name: str
    annotation: Any
    json_type: str
    required: bool
    default: Any
    keyword_only: bool


@dataclasses.dataclass(frozen=True)
class FunctionSpec:
    """A named function and what callers need to know to call it."""

    name: str
    func: Callable[..., Any]
    description: str
    parameters: tuple[ParameterSpec, ...]
    returns: str
    lazy: bool
    var_args: bool
    var_kwargs: bool
    #: Called with the bound arguments (defaults filled in, by name) before the
    #: job is accepted; a ``ValueError`` it raises refuses the call with
    #: INVALID_ARGUMENT. Built-ins use it to bound what a call may allocate.
    check: Callable[..., None] | None = None

    @property
    def signature(self) -> str:
        """The signature with JSON types, e.g. ``add(a: number, b: number) -> number``."""
        parts = []
        for p in self.parameters:
            text = f"{p.name}: {p.json_type}"
            if not p.required:
                text += f" = {_json_repr(p.default)}"
            parts.append(text)
        if self.var_args:
            parts.append("*args")
        if self.var_kwargs:
            parts.append("**kwargs")
        return f"{self.name}({', '.join(parts)}) -> {self.returns}"

    def bind(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[list, dict]:
        """Check JSON ``args``/``kwargs`` against the signature and convert them.

        Returns:
            The converted positional and keyword arguments.

        Raises:
            InvalidArgument: Wrong count, unknown names, or wrong JSON types;
                the message shows the signature.
        """
        positional = [p for p in self.parameters if not p.keyword_only]
        param: ParameterSpec | None
        if len(args) > len(positional) and not self.var_args:
            self._fail(
                f"takes {len(positional)} positional arguments but {len(args)} were given",
                "call.args",
            )
        bound: dict[str, Any] = {}
        out_args: list[Any] = []
        for index, value in enumerate(args):
            if index < len(positional):
                param = positional[index]
                bound[param.name] = self._convert(param, value)
                out_args.append(bound[param.name])
            else:
                out_args.append(_from_json_any(value))
        out_kwargs: dict[str, Any] = {}
        by_name = {p.name: p for p in self.parameters}
        for key, value in kwargs.items():
            param = by_name.get(key)
            if param is None:
                if not self.var_kwargs:
                    self._fail(f"got an unexpected keyword argument {key!r}", key)
                out_kwargs[key] = _from_json_any(value)
                continue
            if key in bound:
                self._fail(f"got multiple values for argument {key!r}", key)
            bound[key] = out_kwargs[key] = self._convert(param, value)
        missing = [p.name for p in self.parameters if p.required and p.name not in bound]
        if missing:
            names = ", ".join(repr(m) for m in missing)
            self._fail(
                f"missing required argument{'s' if len(missing) > 1 else ''} {names}", missing[0]
            )
        if self.check is not None:
            self._check(out_args, out_kwargs)
        return out_args, out_kwargs

    def _check(self, args: list, kwargs: dict) -> None:
        assert self.check is not None
        bound = inspect.signature(self.func).bind(*args, **kwargs)
        bound.apply_defaults()
        try:
            self.check(**bound.arguments)
        except ValueError as exc:
            self._fail(str(exc))

    def _convert(self, param: ParameterSpec, value: Any) -> Any:
        try:
            return convert_json(value, param.annotation)
        except TypeError as exc:
            self._fail(f"argument {param.name!r} must be {param.json_type}: {exc}", param.name)

    def _fail(self, message: str, parameter: str = "call") -> typing.NoReturn:
        raise InvalidArgument(
            f"{self.name}() {message}; signature: {self.signature}",
            field=parameter,
            reason="INVALID_ARGUMENTS",
            metadata={"function": self.name, "signature": self.signature},
        )


class Registry:
    """A set of named functions."""

    def __init__(self) -> None:
        self._functions: dict[str, FunctionSpec] = {}

    def function(
        self,
        func: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        lazy: bool = False,
        check: Callable[..., None] | None = None,
    ) -> Any:
        """Register ``func`` as a named function; use as ``@function`` or ``@function(...)``.

        Args:
            func: The function.
            name: The name callers use; defaults to ``func.__name__``.
            lazy: ``func`` returns a Dask collection for the service to compute
                on the job's scheduler, instead of running as one task.
            check: Called with the bound arguments by name before a job is
                accepted; a ``ValueError`` from it answers INVALID_ARGUMENT.

        Returns:
            ``func`` unchanged, so it stays callable in its module.
        """

        def register(f: Callable[..., Any]) -> Callable[..., Any]:
            self.add(f, name=name, lazy=lazy, check=check)
            return f

        return register(func) if func is not None else register

    def add(
        self,
        func: Callable[..., Any],
        *,
        name: str | None = None,
        lazy: bool = False,
        check: Callable[..., None] | None = None,
    ) -> None:
        """Register ``func`` (see :meth:`function`)."""
        spec = dataclasses.replace(
            describe(func, name=name or func.__name__, lazy=lazy), check=check
        )
        existing = self._functions.get(spec.name)
        if existing is not None and existing.func is not func:
            raise ValueError(f"a function named {spec.name!r} is already registered")
        self._functions[spec.name] = spec

    def update(self, other: Registry) -> None:
        """Add every function of ``other``."""
        for spec in other:
            self.add(spec.func, name=spec.name, lazy=spec.lazy, check=spec.check)

    def get(self, name: str) -> FunctionSpec:
        """The function called ``name``.

        Raises:
            FunctionNotFound: No such function; the message lists the names.
        """
        try:
            return self._functions[name]
        except KeyError:
            known = ", ".join(sorted(self._functions)) or "none"
            raise FunctionNotFound(
                f"no function named {name!r}; this server offers: {known}", resource_name=name
            ) from None

    def __iter__(self) -> typing.Iterator[FunctionSpec]:
        return iter(sorted(self._functions.values(), key=lambda s: s.name))

    def __len__(self) -> int:
        return len(self._functions)

    def __contains__(self, name: object) -> bool:
        return name in self._functions


#: The registry the ``@function`` decorator fills.
default_registry = Registry()
function = default_registry.function


def load_modules(modules: Iterable[str], *, use_entry_points: bool = True) -> None:
    """Import operator modules (and entry points) so their functions register.

    Raises:
        ImportError: A module could not be imported.
    """
    for module in modules:
        logger.info("loading functions from %s", module)
        importlib.import_module(module)
    if use_entry_points:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            logger.info("loading functions from entry point %s = %s", ep.name, ep.value)
            loaded = ep.load()
            if isinstance(loaded, Registry):
                default_registry.update(loaded)
            elif callable(loaded) and not isinstance(loaded, types.ModuleType):
                default_registry.add(loaded, name=ep.name)


def describe(func: Callable[..., Any], *, name: str, lazy: bool = False) -> FunctionSpec:
    """Build the :class:`FunctionSpec` of ``func`` from its signature and hints."""
    sig = inspect.signature(func)
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # unresolvable forward references: treat as unannotated
        hints = {}
    params = []
    var_args = var_kwargs = False
    for p in sig.parameters.values():
        if p.kind is p.VAR_POSITIONAL:
            var_args = True
            continue
        if p.kind is p.VAR_KEYWORD:
            var_kwargs = True
            continue
        if p.kind is p.POSITIONAL_ONLY:
            raise ValueError(f"{name}: positional-only parameters cannot be called by keyword")
        annotation = hints.get(p.name, Any)
        params.append(
            ParameterSpec(
                name=p.name,
                annotation=annotation,
                json_type=json_type(annotation),
                required=p.default is p.empty,
                default=None if p.default is p.empty else p.default,
                keyword_only=p.kind is p.KEYWORD_ONLY,
            )
        )
    doc = inspect.getdoc(func) or ""
    returns = "any" if lazy else json_type(hints.get("return", Any))
    return FunctionSpec(
        name=name,
        func=func,
        description=doc.strip(),
        parameters=tuple(params),
        returns=returns,
        lazy=lazy,
        var_args=var_args,
        var_kwargs=var_kwargs,
    )


_JSON_NAMES = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "array",
    tuple: "array",
    dict: "object",
    type(None): "null",
}


def json_type(annotation: Any) -> str:
    """The JSON type name of a Python annotation ("integer|null" for ``int | None``)."""
    if annotation is Any or annotation is inspect.Parameter.empty:
        return "any"
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        names = []
        for arg in typing.get_args(annotation):
            name = json_type(arg)
            if name not in names:
                names.append(name)
        return "|".join(names)
    base = origin or annotation
    for py_type, name in _JSON_NAMES.items():
        if base is py_type:
            return name
    if isinstance(base, type) and issubclass(base, Mapping):
        return "object"
    if isinstance(base, type) and issubclass(base, Sequence) and base is not str:
        return "array"
    return "any"


def convert_json(value: Any, annotation: Any) -> Any:
    """Convert a decoded JSON ``value`` to ``annotation``.

    JSON has one number type, so an ``int`` parameter accepts only integral
    numbers (``20`` or ``20.0``) and gets a Python int; a ``float`` parameter
    accepts any number, and an integral one stays an int (PEP 484's numeric
    tower). Booleans are never numbers.

    Raises:
        TypeError: ``value`` does not fit ``annotation``.
    """
    if annotation is Any or annotation is inspect.Parameter.empty:
        return _from_json_any(value)
    if isinstance(value, Mapping) and len(value) == 1 and ("$object" in value or "$job" in value):
        # A reference to an uploaded object or a job's result: the core puts it here.
        return dict(value)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            try:
                return convert_json(value, arg)
            except TypeError:
                continue
        raise TypeError(f"got {_describe(value)}")
    base = origin or annotation
    if base is type(None):
        if value is None:
            return None
        raise TypeError(f"expected null, got {_describe(value)}")
    if base is bool:
        if isinstance(value, bool):
            return value
        raise TypeError(f"expected a boolean, got {_describe(value)}")
    if base is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"expected an integer, got {_describe(value)}")
        if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
            raise TypeError(f"expected an integer, got {_describe(value)}")
        return int(value)
    if base is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"expected a number, got {_describe(value)}")
        return _from_json_any(value)
    if base is str:
        if isinstance(value, str):
            return value
        raise TypeError(f"expected a string, got {_describe(value)}")
    if isinstance(base, type) and issubclass(base, Mapping):
        if not isinstance(value, Mapping):
            raise TypeError(f"expected an object, got {_describe(value)}")
        args = typing.get_args(annotation)
        value_type = args[1] if len(args) == 2 else Any
        return {k: convert_json(v, value_type) for k, v in value.items()}
    if isinstance(base, type) and issubclass(base, (list, tuple, Sequence)) and base is not str:
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"expected an array, got {_describe(value)}")
        args = typing.get_args(annotation)
        if base is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise TypeError(f"expected an array of {len(args)} items, got {len(value)}")
            return tuple(convert_json(v, t) for v, t in zip(value, args))
        item_type = args[0] if args else Any
        items = [convert_json(v, item_type) for v in value]
        return tuple(items) if base is tuple else items
    # Unknown annotation (a class of the operator's): pass JSON through.
    return _from_json_any(value)


def _from_json_any(value: Any) -> Any:
    """Decoded JSON with integral numbers as ints (protobuf's Value has only doubles)."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= _MAX_SAFE_INT:
        return int(value)
    if isinstance(value, list):
        return [_from_json_any(v) for v in value]
    if isinstance(value, dict):
        return {k: _from_json_any(v) for k, v in value.items()}
    return value


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"number {value:g}" if isinstance(value, float) else f"number {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"string {shown!r}"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _json_repr(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)
