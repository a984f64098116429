// Custom partitioner: every record of a tenant lands on the same partition
// of the route's default target.
//
// partition = FNV-1a-32(tenant) mod (partition count of the target), where
// the tenant is the value of the `tenant-id` header (config key `header`
// names another one), or the record key when the header is missing or
// empty, or the empty string when there is no key either. Config
// `keyless = "reject"` rejects records with neither tenant nor key instead.
// Key, value and headers pass through unchanged. The same rule as the Rust
// and Python versions.

import {
  Config,
  ConfigError,
  Message,
  Output,
  RouteError,
  defaultTarget,
  fnv1a32,
  partitionCount,
  plugin,
} from "switchyard-sdk";

const EMPTY = new Uint8Array(0);

export default plugin(
  class TenantPartitioner {
    readonly header: string;
    readonly rejectKeyless: boolean;

    constructor(config: Config) {
      config.denyUnknown(["header", "keyless"]);
      this.header = config.get("header", "tenant-id");
      if (this.header === "") {
        throw new ConfigError("config key 'header' must not be empty");
      }
      const keyless = config.get("keyless", "hash-empty");
      if (keyless !== "hash-empty" && keyless !== "reject") {
        throw new ConfigError(
          `config key 'keyless' is '${keyless}': use "hash-empty" (the default) or "reject"`,
        );
      }
      this.rejectKeyless = keyless === "reject";
    }

    route(msg: Message): Output[] {
      let tenant = msg.header(this.header);
      if (tenant === null || tenant.length === 0) {
        tenant = msg.key;
        if (tenant === null) {
          if (this.rejectKeyless) {
            throw RouteError.reject(`record has no '${this.header}' header and no key`);
          }
          tenant = EMPTY;
        }
      }
      const target = defaultTarget();
      const partitions = partitionCount(target);
      if (!partitions) {
        throw RouteError.retry(`partition count of '${target}' is unknown`);
      }
      return [Output.forward({ partition: fnv1a32(tenant) % partitions })];
    }
  },
);
