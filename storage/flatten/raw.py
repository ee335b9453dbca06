"""Export requests re-read with their attribute lists left as raw bytes, and a bounded cache
from one attribute's bytes to the (key, string value) pair that is stored.

With protobuf's upb backend, reading a parsed attribute costs a Python object for the
`KeyValue`, one for its `AnyValue`, and a call per field read: ~450 ns per attribute, which was
half of flattening a span. Here flattening re-reads the request through a copy of its schema in
which every attribute list (`repeated KeyValue`) is `repeated bytes` instead; both are
length-delimited fields, so the bytes parse the same, and each attribute comes out as the bytes
of its `KeyValue` in one C call. An attribute's stored value depends on those bytes alone, so
the pair is computed once per distinct attribute (`any_value_str`, as before) and then found in
a dict (~60 ns). Most attributes repeat (methods, routes, status codes, peers); a unique one
costs about what it did before for short strings, about twice that for other kinds.

The copy changes nothing else: the other fields keep their names and types, so the flatteners
read the view as they would read the request.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from storage.flatten.common import any_value_str

_KEY_VALUE = "." + KeyValue.DESCRIPTOR.full_name
_PACKAGE = "otlp_gateway.flatten.raw"

# The cache holds at most this many attributes, each at most this many bytes long; when full it
# starts again empty. Worst case about 40 MB; ~10 MB for typical attributes.
MAX_CACHED_ATTRIBUTES = 1 << 15
MAX_CACHED_ATTRIBUTE_BYTES = 512


def _raw_view(name: str, messages: tuple) -> type:
    """A message class for `messages[0]` whose `repeated KeyValue` fields, in the messages
    listed (nested types included), are `repeated bytes`. Other message fields keep their
    original types."""
    renamed = {}
    for message in messages:
        renamed["." + message.DESCRIPTOR.full_name] = f".{_PACKAGE}.{name}.{message.DESCRIPTOR.name}"
        for nested in message.DESCRIPTOR.nested_types:
            renamed["." + nested.full_name] = f".{_PACKAGE}.{name}.{message.DESCRIPTOR.name}.{nested.name}"

    def rewrite(proto: descriptor_pb2.DescriptorProto) -> None:
        for field in proto.field:
            if field.type_name == _KEY_VALUE:
                field.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
                field.ClearField("type_name")
            elif field.type_name in renamed:
                field.type_name = renamed[field.type_name]
        for nested in proto.nested_type:
            rewrite(nested)

    file = descriptor_pb2.FileDescriptorProto(
        name=f"otlp_gateway/flatten/raw_{name}.proto",
        package=f"{_PACKAGE}.{name}",
        syntax="proto3",
        dependency=sorted({m.DESCRIPTOR.file.name for m in messages} | {KeyValue.DESCRIPTOR.file.name}),
    )
    for message in messages:
        proto = file.message_type.add()
        message.DESCRIPTOR.CopyToProto(proto)
        rewrite(proto)
    # Enums and other messages (Status, InstrumentationScope, ...) stay the originals, so their
    # files must be known to the pool: the default one, where the generated modules put them.
    for dependency in file.dependency:
        descriptor_pool.Default().FindFileByName(dependency)
    file_descriptor = descriptor_pool.Default().Add(file)
    return message_factory.GetMessageClass(file_descriptor.message_types_by_name[messages[0].DESCRIPTOR.name])


RawTraces = _raw_view("traces", (ExportTraceServiceRequest, ResourceSpans, Resource, ScopeSpans, Span))


def raw_traces(request):
    """The request as a `RawTraces`: the same fields, attribute lists as lists of bytes. A
    `RawTraces` (parsed from the body directly) is used as it is."""
    if isinstance(request, RawTraces):
        return request
    return RawTraces.FromString(request.SerializeToString())


def _decode(raw: bytes) -> tuple[str, str]:
    # The common case spelled out: a string value and a key, both under 128 bytes, encoded as
    # key (field 1), value (field 2) holding string_value (field 1). Anything else is parsed.
    n = len(raw)
    if n > 5 and raw[0] == 0x0A:
        key_end = 2 + raw[1]
        if (
            raw[1] < 0x80
            and n >= key_end + 4
            and raw[key_end] == 0x12
            and raw[key_end + 1] < 0x80
            and raw[key_end + 1] == n - key_end - 2
            and raw[key_end + 2] == 0x0A
            and raw[key_end + 3] == n - key_end - 4
        ):
            return raw[2:key_end].decode(), raw[key_end + 4 :].decode()
    key_value = KeyValue.FromString(raw)
    return key_value.key, any_value_str(key_value.value)


class _AttributeCache(dict):
    """bytes of a KeyValue -> (key, value as stored). Safe to share between threads: a race
    at worst computes a pair twice, or empties the cache twice."""

    def __missing__(self, raw: bytes) -> tuple[str, str]:
        pair = _decode(raw)
        if len(raw) <= MAX_CACHED_ATTRIBUTE_BYTES:
            if len(self) >= MAX_CACHED_ATTRIBUTES:
                self.clear()
            self[raw] = pair
        return pair


_cache = _AttributeCache()
_pair = _cache.__getitem__


def raw_attributes(raw_key_values) -> dict[str, str]:
    """What `common.attributes` makes of the same `KeyValue`s (a later duplicate key wins, in
    the first one's place), from their bytes. `[:]`: protobuf's (upb) repeated fields have no
    iterator of their own, so iterating one directly ends in an IndexError raised and caught
    inside Python (~1,800 instructions each; ~3 per span were 7% of flattening); a slice is a
    list."""
    return dict(map(_pair, raw_key_values[:]))
