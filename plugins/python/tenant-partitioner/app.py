"""Custom partitioner: every record of a tenant lands on the same partition
of the route's default target.

partition = FNV-1a-32(tenant) mod (partition count of the target), where the
tenant is the value of the ``tenant-id`` header (config key ``header`` names
another one), or the record key when the header is missing or empty, or the
empty string when there is no key either. Config ``keyless = "reject"``
rejects records with neither tenant nor key instead. Key, value and headers
pass through unchanged. The same rule as the Rust and TypeScript versions.
"""

import switchyard
from switchyard import Config, ConfigError, Message, Output, RouteError


@switchyard.plugin
class TenantPartitioner(switchyard.Plugin):
    def __init__(self, config: Config) -> None:
        config.deny_unknown(["header", "keyless"])
        self.header = config.get("header", "tenant-id")
        if not self.header:
            raise ConfigError("config key 'header' must not be empty")
        keyless = config.get("keyless", "hash-empty")
        if keyless not in ("hash-empty", "reject"):
            raise ConfigError(
                f"config key 'keyless' is '{keyless}': use \"hash-empty\" (the default) or \"reject\""
            )
        self.reject_keyless = keyless == "reject"

    def route(self, msg: Message) -> list[Output]:
        tenant = msg.header(self.header)
        if not tenant:
            tenant = msg.key
            if tenant is None:
                if self.reject_keyless:
                    raise RouteError.reject(f"record has no '{self.header}' header and no key")
                tenant = b""
        target = switchyard.default_target()
        partitions = switchyard.partition_count(target)
        if not partitions:
            raise RouteError.retry(f"partition count of '{target}' is unknown")
        return [Output.forward(partition=switchyard.fnv1a_32(tenant) % partitions)]
