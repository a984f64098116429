"""A route's ``plugin_config``."""

from collections.abc import Iterable, Iterator


class ConfigError(ValueError):
    """The configuration is refused: raise it (or any exception) from a
    plugin's ``init`` and the router reports the message and does not use
    the plugin."""


class Config:
    """A route's ``plugin_config``: string keys and values, in the order the
    router passed them."""

    __slots__ = ("_pairs",)

    def __init__(self, pairs: Iterable[tuple[str, str]] | dict[str, str] = ()) -> None:
        items = pairs.items() if isinstance(pairs, dict) else pairs
        self._pairs: list[tuple[str, str]] = [(str(k), str(v)) for k, v in items]

    def get(self, key: str, default: str | None = None) -> str | None:
        """The value of ``key``, or ``default`` if it is not set."""
        for k, v in self._pairs:
            if k == key:
                return v
        return default

    def require(self, key: str) -> str:
        """The value of ``key``; raises :class:`ConfigError` naming the key
        if it is not set."""
        value = self.get(key)
        if value is None:
            raise ConfigError(f"missing required config key '{key}'")
        return value

    def deny_unknown(self, known: Iterable[str]) -> None:
        """Refuses keys outside ``known`` (raises :class:`ConfigError`), so
        that a typo in the route's configuration is reported instead of
        silently ignored."""
        known = list(known)
        for k, _ in self._pairs:
            if k not in known:
                if not known:
                    raise ConfigError(
                        f"unknown config key '{k}': this plugin takes no configuration"
                    )
                raise ConfigError(f"unknown config key '{k}' (known keys: {', '.join(known)})")

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._pairs)

    def __len__(self) -> int:
        return len(self._pairs)

    def __repr__(self) -> str:
        return f"Config({self._pairs!r})"
