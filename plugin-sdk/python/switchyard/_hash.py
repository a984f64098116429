"""FNV-1a, the hash Switchyard's partitioners share across languages."""

_OFFSET_BASIS = 0x811C9DC5
_PRIME = 0x01000193

# Hashes of short inputs already seen: partitioners hash the same few
# tenants over and over, and a dict lookup is far cheaper than the loop in
# an interpreter. Bounded: past it, inputs are hashed every time.
_seen: dict[bytes, int] = {}
_SEEN_MAX = 4096
_SEEN_LEN = 256


def fnv1a_32(data: bytes | str) -> int:
    """The 32-bit FNV-1a hash of ``data`` (a ``str`` is hashed as UTF-8).

    Stable across platforms, versions and languages: the Rust and
    TypeScript SDKs compute the same number, so a partition computed as
    ``fnv1a_32(tenant) % partitions`` is the same whichever SDK a plugin
    uses.
    """
    if isinstance(data, str):
        data = data.encode()
    elif type(data) is not bytes:
        data = bytes(data)
    h = _seen.get(data)
    if h is not None:
        return h
    h = _OFFSET_BASIS
    for byte in data:
        h = ((h ^ byte) * _PRIME) & 0xFFFFFFFF
    if len(data) <= _SEEN_LEN and len(_seen) < _SEEN_MAX:
        _seen[data] = h
    return h
