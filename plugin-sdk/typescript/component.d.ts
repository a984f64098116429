/** The component's exports for a marked plugin; used by the entry module
 * `switchyard build` writes, not by plugin code. */
export declare function witExports(
  marked: unknown,
  host: unknown,
): { init(config: [string, string][]): void; route(records: unknown, count: number, context: unknown): unknown[] };
