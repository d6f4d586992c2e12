"""Typed message bodies: decode a JSON body into a class, encode an instance to send (no I/O).

A body type is a dataclass, a ``TypedDict``, a ``msgspec.Struct`` or a pydantic model
class. msgspec (extra ``msgspec``) decodes the first three, and is the fastest; pydantic
(extra ``pydantic``) decodes its own models, and dataclasses and TypedDicts when msgspec is
absent. Neither library is imported until a body type needs it.

A body that does not fit its type raises :class:`BodyMismatch` from the decoder; the
consumer turns that into a per-message decode failure, never a stream error.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from typing_extensions import is_typeddict

from rx_pgmq.errors import BodyMismatch, InvalidArgument
from rx_pgmq.message import Message

__all__ = [
    "Library",
    "body_decoder",
    "body_kind",
    "decode_messages",
    "decoder",
    "encode_body",
    "text_decoder",
]

T = TypeVar("T")
Library = Literal["msgspec", "pydantic"]
Kind = Literal["dataclass", "typeddict", "msgspec", "pydantic"]

_RULE = "must be a dataclass, TypedDict, msgspec.Struct or pydantic model class"
_PLAIN = (dict, list, str, int, float, bool, type(None))


def _from_library(cls: type, module: str, name: str) -> bool:
    return any(b.__module__.split(".")[0] == module and b.__name__ == name for b in cls.__mro__)


def body_kind(body_type: object) -> Kind:
    """Which kind of body type ``body_type`` is.

    Raises:
        InvalidArgument: If it is none of the four.
    """
    if isinstance(body_type, type):
        if _from_library(body_type, "pydantic", "BaseModel"):
            return "pydantic"
        if _from_library(body_type, "msgspec", "Struct"):
            return "msgspec"
        if dataclasses.is_dataclass(body_type):
            return "dataclass"
    if is_typeddict(body_type):
        return "typeddict"
    raise InvalidArgument("body_type", f"{_RULE}, got {body_type!r}")


@functools.cache
def _installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _library(kind: Kind, prefer: tuple[Library, ...]) -> Library:
    usable: tuple[Library, ...] = prefer
    if kind == "msgspec" or kind == "pydantic":
        usable = (kind,)
    for name in usable:
        if _installed(name):
            return name
    extra = " or ".join(f"rx-pgmq[{name}]" for name in usable)
    raise InvalidArgument("body_type", f"decoding a {kind} body needs {extra}: pip install it")


def decoder(
    body_type: type[T], prefer: tuple[Library, ...] = ("msgspec", "pydantic")
) -> Callable[[Any], T]:
    """A function that turns a parsed JSON body into ``body_type``.

    Args:
        body_type: A dataclass, TypedDict, msgspec.Struct or pydantic model class.
        prefer: The libraries to try for dataclasses and TypedDicts, in order.

    Returns:
        The decoder; it raises :class:`BodyMismatch` for a body that does not fit.

    Raises:
        InvalidArgument: If ``body_type`` is not one of the four kinds, or no library
            that decodes it is installed.
    """
    kind = body_kind(body_type)
    name = getattr(body_type, "__name__", repr(body_type))
    if _library(kind, prefer) == "msgspec":
        msgspec = importlib.import_module("msgspec")
        convert, invalid = msgspec.convert, msgspec.ValidationError

        def from_msgspec(value: Any) -> T:
            try:
                return convert(value, type=body_type)  # type: ignore[no-any-return]
            except invalid as exc:
                raise BodyMismatch(name, str(exc)) from None

        return from_msgspec
    return _pydantic_decoder(body_type, name, "validate_python")


def _adapter(body_type: type, name: str) -> Any:
    """pydantic's ``TypeAdapter`` for ``body_type``.

    Raises:
        InvalidArgument: If pydantic cannot take the type (e.g. a ``typing.TypedDict``
            before Python 3.12).
    """
    pydantic = importlib.import_module("pydantic")
    try:
        return pydantic.TypeAdapter(body_type)
    except pydantic.PydanticUserError as exc:
        first = str(exc).strip().splitlines()[0]
        raise InvalidArgument(
            "body_type", f"pydantic cannot decode {name} ({first}); install rx-pgmq[msgspec]"
        ) from exc


def _pydantic_decoder(
    body_type: type[T], name: str, method: Literal["validate_python", "validate_json"]
) -> Callable[[Any], T]:
    """pydantic's ``TypeAdapter.<method>`` for ``body_type``, its errors as
    :func:`_pydantic_mismatch` (JSON values: ``validate_python``; JSON text:
    ``validate_json``)."""
    validate = getattr(_adapter(body_type, name), method)
    invalid = importlib.import_module("pydantic").ValidationError

    def from_pydantic(value: Any) -> T:
        try:
            return validate(value)  # type: ignore[no-any-return]
        except invalid as exc:
            raise _pydantic_mismatch(name, exc) from None

    return from_pydantic


def _pydantic_mismatch(name: str, exc: Any) -> Exception:
    """The error of a pydantic ``ValidationError``: :class:`BodyMismatch` naming the first
    field, or a plain ``ValueError`` when the text is not JSON pydantic can parse."""
    first = exc.errors()[0]
    if first["type"] == "json_invalid":
        return ValueError(f"{name}: {first['msg']}")
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return BodyMismatch(name, f"{where}: {first['msg']}")


def encode_body(body: object) -> object:
    """``body`` as plain JSON values if it is an instance of a body type, else unchanged.

    pydantic models dump in JSON mode; msgspec Structs and dataclasses go through
    ``msgspec.to_builtins`` (``dataclasses.asdict`` without msgspec).
    """
    cls = type(body)
    if cls in _PLAIN:
        return body
    if _from_library(cls, "pydantic", "BaseModel"):
        return body.model_dump(mode="json")  # type: ignore[attr-defined]
    if _from_library(cls, "msgspec", "Struct") or dataclasses.is_dataclass(body):
        if _installed("msgspec"):
            return importlib.import_module("msgspec").to_builtins(body)
        return dataclasses.asdict(body)  # type: ignore[call-overload]
    return body


def text_decoder(
    body_type: type[T], prefer: tuple[Library, ...] = ("msgspec",)
) -> Callable[[str], T]:
    """A function from a body's JSON text straight to ``body_type``, for the consumer's reads.

    With msgspec for the type, its typed JSON decoder parses and checks in one pass;
    otherwise pydantic's ``validate_json`` does: both cost less than parsing to dicts first
    and converting after (figures in BENCHMARKS.md, "Typed bodies"). Typed bodies are parsed
    by their library: a custom ``set_json_loads`` function applies to untyped bodies and to
    headers only.

    Raises:
        InvalidArgument: As :func:`decoder`.
    """
    kind = body_kind(body_type)
    if kind != "pydantic" and _library(kind, (*prefer, "pydantic")) == "msgspec":
        msgspec = importlib.import_module("msgspec")
        decode_text = msgspec.json.Decoder(body_type).decode
        invalid, malformed = msgspec.ValidationError, msgspec.DecodeError
        name = getattr(body_type, "__name__", repr(body_type))

        def from_text(text: str) -> T:
            try:
                return decode_text(text)  # type: ignore[no-any-return]
            except invalid as exc:  # a ValidationError is a DecodeError too: first
                raise BodyMismatch(name, str(exc)) from None
            except malformed as exc:  # a ValueError from msgspec 0.21 on, as json's
                raise ValueError(str(exc)) from None

        return from_text
    name = getattr(body_type, "__name__", repr(body_type))
    _library(kind, ("pydantic",))  # InvalidArgument without pydantic
    return _pydantic_decoder(body_type, name, "validate_json")


def body_decoder(body_type: type[T] | None) -> Callable[[Any], T] | None:
    """:func:`decoder` for ``body_type``, or None when there is none (bodies stay JSON).

    Raises:
        InvalidArgument: If ``body_type`` is not a body type (checked before any SQL).
    """
    return None if body_type is None else decoder(body_type)


def decode_messages(messages: list[Message], decode: Callable[[Any], T] | None) -> list[Message[T]]:
    """``messages`` with each body decoded by ``decode`` (unchanged if it is None).

    Raises:
        BodyMismatch: For the first body that does not fit, naming its message.
    """
    if decode is None:
        return messages
    typed: list[Message[T]] = []
    for m in messages:
        try:
            typed.append(dataclasses.replace(m, body=decode(m.body)))
        except BodyMismatch as exc:
            raise BodyMismatch(exc.body_type, exc.detail, m.msg_id, m.queue) from None
    return typed
