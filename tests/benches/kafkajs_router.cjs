// The router a team writes by hand in node, for the benchmarks to compare
// with: a kafkajs consume -> produce loop with the tenant partitioner's
// logic (partition = FNV-1a-32 of the `tenant-id` header, or of the key,
// modulo the target's partition count), a batch at a time, one `send` per
// batch, auto-commit, no checks. LZ4 both ways, with the kafkajs-lz4
// codec, as the other routers read and write it.
//
// Usage: node kafkajs_router.cjs BOOTSTRAP GROUP SOURCE TARGET
// (kafkajs and kafkajs-lz4 found through NODE_PATH). Runs until killed.
"use strict";

const { CompressionCodecs, CompressionTypes, Kafka, logLevel } = require("kafkajs");
const LZ4 = require("kafkajs-lz4");

CompressionCodecs[CompressionTypes.LZ4] = new LZ4().codec;

function fnv1a32(bytes) {
  let h = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) {
    h ^= bytes[i];
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

async function main() {
  const [bootstrap, group, source, target] = process.argv.slice(2);
  const kafka = new Kafka({ clientId: "kafkajs-router", brokers: [bootstrap], logLevel: logLevel.ERROR });
  const admin = kafka.admin();
  await admin.connect();
  const [metadata] = (await admin.fetchTopicMetadata({ topics: [target] })).topics;
  await admin.disconnect();
  const partitions = metadata.partitions.length;
  if (partitions === 0) throw new Error(`topic '${target}' has no partitions`);

  const producer = kafka.producer();
  const consumer = kafka.consumer({ groupId: group, maxWaitTimeInMs: 10 });
  await Promise.all([producer.connect(), consumer.connect()]);
  await consumer.subscribe({ topic: source, fromBeginning: true });
  const empty = Buffer.alloc(0);
  await consumer.run({
    eachBatch: async ({ batch }) => {
      const messages = batch.messages.map((m) => {
        const header = m.headers?.["tenant-id"];
        const tenant = (header && header.length > 0 ? header : m.key) ?? empty;
        return {
          key: m.key,
          value: m.value,
          headers: m.headers,
          timestamp: m.timestamp,
          partition: fnv1a32(tenant) % partitions,
        };
      });
      await producer.send({ topic: target, messages, compression: CompressionTypes.LZ4 });
    },
  });
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
