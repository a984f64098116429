"""FNV-1a, the hash Switchyard's partitioners share across languages."""

_OFFSET_BASIS = 0x811C9DC5
_PRIME = 0x01000193


def fnv1a_32(data: bytes | str) -> int:
    """The 32-bit FNV-1a hash of ``data`` (a ``str`` is hashed as UTF-8).

    Stable across platforms, versions and languages: the Rust and
    TypeScript SDKs compute the same number, so a partition computed as
    ``fnv1a_32(tenant) % partitions`` is the same whichever SDK a plugin
    uses.
    """
    if isinstance(data, str):
        data = data.encode()
    h = _OFFSET_BASIS
    for byte in data:
        h = ((h ^ byte) * _PRIME) & 0xFFFFFFFF
    return h
