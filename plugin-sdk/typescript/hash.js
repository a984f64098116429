const encoder = new TextEncoder();

/**
 * The 32-bit FNV-1a hash of `data` (a string is hashed as UTF-8).
 *
 * Stable across platforms, versions and languages: the Rust and Python
 * SDKs compute the same number, so a partition computed as
 * `fnv1a32(tenant) % partitions` is the same whichever SDK a plugin uses.
 */
export function fnv1a32(data) {
  const bytes = typeof data === "string" ? encoder.encode(data) : data;
  let h = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) {
    h ^= bytes[i];
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}
