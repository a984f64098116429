//! End-to-end: records in the schema-registry wire format, written by
//! encoders that are not Switchyard's (confluent-kafka's serializers and
//! fastavro), routed by a field of their decoded value on the test broker,
//! with the schemas served by a registry on loopback; bad records
//! dead-lettered with kind `schema`; a registry outage waited out.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::expect_used,
    reason = "test code"
)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchyard::config::RouterConfig;
use switchyard::pipeline::{FailureSink, RecordFailure};
use switchyard::plugin::PluginEngine;
use switchyard::router::{self, RouterHandle};
use switchyard_plugin_fixtures as fixtures;
use switchyard_tests::registry::{Mode, TestRegistry};
use switchyard_tests::{
    IndependentRecord, TestRecord, consume, create_topics, http_get, produce, random_topic,
    wait_until,
};

const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// Failed records, as (topic, offset, kind, message).
#[derive(Default)]
struct Failures(Mutex<Vec<(String, i64, String, String)>>);

impl FailureSink for Failures {
    fn failed(&self, f: &RecordFailure<'_>) {
        self.0.lock().unwrap().push((
            f.record.topic.to_string(),
            f.record.offset,
            f.failure.kind.to_string(),
            f.failure.message.clone(),
        ));
    }
}

fn start(config: &RouterConfig) -> (RouterHandle, Arc<Failures>) {
    let failures = Arc::new(Failures::default());
    let engine = PluginEngine::new().unwrap();
    let handle = router::start(config, &engine, failures.clone()).unwrap();
    (handle, failures)
}

fn stop(handle: RouterHandle) {
    handle.shutdown();
    handle.join();
}

fn framed(bytes: &[u8]) -> TestRecord {
    TestRecord {
        value: Some(bytes.to_vec()),
        ..TestRecord::default()
    }
}

/// A route reading values by schema through the field router.
fn field_route(name: &str, source: &str, field: &str, prefix: &str, dead: &str) -> String {
    format!(
        r#"
[[routes]]
name = "{name}"
source_topics = ["{source}"]
plugin = "{plugin}"
default_target = "{prefix}default"
allowed_targets = ["{prefix}*"]
dead_letter_topic = "{dead}"
value_format = "schema-registry"
plugin_config = {{ field = "{field}", topic_prefix = "{prefix}" }}
"#,
        plugin = fixtures::field_router().display()
    )
}

fn case<'a>(records: &'a [IndependentRecord], name: &str) -> &'a IndependentRecord {
    records.iter().find(|r| r.case == name).unwrap()
}

#[test]
fn avro_protobuf_and_json_schema_records_are_routed_by_a_field_and_bad_ones_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let records = switchyard_tests::independent_records(dir.path()).unwrap();
    let registry = TestRegistry::start(dir.path().join("schemas")).unwrap();

    let (orders, shipments, events) = (
        random_topic("orders"),
        random_topic("shipments"),
        random_topic("events"),
    );
    let (o, s, e) = (
        format!("{}-", random_topic("o")),
        format!("{}-", random_topic("s")),
        format!("{}-", random_topic("e")),
    );
    let dead = random_topic("dead");
    let targets = [
        format!("{o}default"),
        format!("{o}eu-west"),
        format!("{s}default"),
        format!("{s}eu-west"),
        format!("{e}default"),
        format!("{e}acme"),
        format!("{e}globex"),
    ];
    let mut topics: Vec<(&str, i32)> =
        vec![(&orders, 1), (&shipments, 1), (&events, 1), (&dead, 1)];
    topics.extend(targets.iter().map(|t| (t.as_str(), 1)));
    create_topics(&topics).unwrap();

    let routes = format!(
        "[schemas.registry]\nurl = \"{}\"\n{}{}{}",
        registry.url(),
        field_route("orders", &orders, "customer.region", &o, &dead),
        field_route("shipments", &shipments, "region", &s, &dead),
        field_route("events", &events, "tenant", &e, &dead),
    );
    let config = switchyard_tests::router_config(&random_topic("group"), &routes).unwrap();

    // Avro: from confluent-kafka's serializer and from fastavro, then three
    // records no schema can read.
    let order = |name| case(&records, name).bytes.clone();
    let mut truncated = order("avro 0");
    truncated.truncate(truncated.len() - 2);
    let mut unknown = order("avro 0");
    unknown[1..5].copy_from_slice(&999_u32.to_be_bytes());
    produce(
        &orders,
        &[
            framed(&order("avro 0")),
            framed(&order("avro 1")),
            framed(&order("fastavro 0")),
            framed(b"{\"id\": 1}"),
            framed(&unknown),
            framed(&truncated),
        ],
    )
    .unwrap();
    produce(
        &shipments,
        &[
            framed(&case(&records, "protobuf 0").bytes),
            framed(&case(&records, "protobuf 1").bytes),
        ],
    )
    .unwrap();
    produce(
        &events,
        &[
            framed(&case(&records, "json 0").bytes),
            framed(&case(&records, "json 1").bytes),
        ],
    )
    .unwrap();

    let (handle, failures) = start(&config);
    let read = |topic: &str, n| consume(topic, n, READ_TIMEOUT).unwrap();
    let values = |records: Vec<TestRecord>| -> Vec<Vec<u8>> {
        records.into_iter().map(|r| r.value.unwrap()).collect()
    };

    // Forwarded byte for byte, to the topic the field names.
    assert_eq!(
        values(read(&format!("{o}eu-west"), 2)),
        vec![order("avro 0"), order("fastavro 0")]
    );
    assert_eq!(
        values(read(&format!("{o}default"), 1)),
        vec![order("avro 1")],
        "a null region"
    );
    assert_eq!(
        values(read(&format!("{s}eu-west"), 1)),
        vec![case(&records, "protobuf 0").bytes.clone()]
    );
    assert_eq!(
        values(read(&format!("{s}default"), 1)),
        vec![case(&records, "protobuf 1").bytes.clone()],
        "an empty region"
    );
    assert_eq!(
        values(read(&format!("{e}acme"), 1)),
        vec![case(&records, "json 0").bytes.clone()]
    );
    assert_eq!(
        values(read(&format!("{e}globex"), 1)),
        vec![case(&records, "json 1").bytes.clone()]
    );

    // The bad records, dead-lettered with why.
    let dead_letters = read(&dead, 3);
    let by_offset: HashMap<i64, &TestRecord> = dead_letters
        .iter()
        .map(|r| {
            (
                r.header_str("dlq-original-offset")
                    .unwrap()
                    .parse()
                    .unwrap(),
                r,
            )
        })
        .collect();
    for (offset, bytes, says) in [
        (3, b"{\"id\": 1}".to_vec(), "not the magic byte 0x00"),
        (4, unknown.clone(), "schema 999"),
        (5, truncated.clone(), "schema 2 (Avro)"),
    ] {
        let record = by_offset[&offset];
        assert_eq!(
            record.value.as_deref(),
            Some(bytes.as_slice()),
            "offset {offset}: kept as consumed"
        );
        assert_eq!(
            record.header_str("dlq-error-kind"),
            Some("schema"),
            "offset {offset}"
        );
        let reason = record.header_str("dlq-error").unwrap();
        assert!(
            reason.starts_with("value: ") && reason.contains(says),
            "offset {offset}: {reason}"
        );
    }
    let failed: Vec<_> = failures
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|f| (f.1, f.2.clone()))
        .collect();
    assert_eq!(
        failed,
        vec![
            (3, "schema".to_owned()),
            (4, "schema".to_owned()),
            (5, "schema".to_owned())
        ]
    );

    // The registry was asked for each schema once.
    assert_eq!(registry.requests("/schemas/ids/2"), 1);
    assert_eq!(registry.requests("/schemas/ids/999"), 1);
    stop(handle);

    // And the independent decoders read what came out as what went in.
    let out: Vec<(String, String, Vec<u8>)> = ["avro 0", "avro 1", "protobuf 0", "json 1"]
        .iter()
        .map(|name| {
            let r = case(&records, name);
            (r.case.clone(), r.kind.clone(), r.bytes.clone())
        })
        .collect();
    for (name, value) in switchyard_tests::decoded_independently(&out).unwrap() {
        assert_eq!(value, case(&records, &name).value, "{name}");
    }
}

#[test]
fn records_wait_while_the_registry_is_down_and_flow_when_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let records = switchyard_tests::independent_records(dir.path()).unwrap();
    let registry = TestRegistry::start(dir.path().join("schemas")).unwrap();
    registry.set_mode(Mode::Unavailable);

    let (orders, dead) = (random_topic("orders"), random_topic("dead"));
    let o = format!("{}-", random_topic("o"));
    let (default, eu) = (format!("{o}default"), format!("{o}eu-west"));
    create_topics(&[(&orders, 1), (&dead, 1), (&default, 1), (&eu, 1)]).unwrap();
    let routes = format!(
        "[schemas.registry]\nurl = \"{}\"\ntimeout_ms = 500\n{}",
        registry.url(),
        field_route("orders", &orders, "customer.region", &o, &dead),
    );
    let config = switchyard_tests::router_config(&random_topic("group"), &routes).unwrap();
    let order = case(&records, "avro 0").bytes.clone();
    produce(&orders, &[framed(&order), framed(&order)]).unwrap();

    let (handle, failures) = start(&config);
    let http = handle.http_addr().unwrap();
    // Held at the first record, and /ready says why.
    wait_until(Duration::from_secs(60), || {
        let (code, body) = http_get(http, "/ready").unwrap();
        code == 503 && body.contains("waiting for schema 2") && body.contains("503")
    })
    .unwrap();
    assert!(
        failures.0.lock().unwrap().is_empty(),
        "nothing fails for an outage"
    );

    registry.set_mode(Mode::Normal);
    let routed = consume(&eu, 2, READ_TIMEOUT).unwrap();
    assert!(
        routed
            .iter()
            .all(|r| r.value.as_deref() == Some(order.as_slice()))
    );
    wait_until(Duration::from_secs(30), || {
        let (code, _) = http_get(http, "/ready").unwrap();
        code == 200
    })
    .unwrap();
    assert!(failures.0.lock().unwrap().is_empty());
    stop(handle);
}

#[test]
fn avro_becomes_json_for_a_legacy_consumer_and_json_becomes_avro_again() {
    let dir = tempfile::tempdir().unwrap();
    let records = switchyard_tests::independent_records(dir.path()).unwrap();
    let registry = TestRegistry::start(dir.path().join("schemas")).unwrap();
    let (avro_in, json_out, json_in, avro_out, dead) = (
        random_topic("avro-in"),
        random_topic("json-out"),
        random_topic("json-in"),
        random_topic("avro-out"),
        random_topic("dead"),
    );
    create_topics(&[
        (&avro_in, 1),
        (&json_out, 1),
        (&json_in, 1),
        (&avro_out, 1),
        (&dead, 1),
    ])
    .unwrap();
    let plugin = fixtures::json_bridge();
    let routes = format!(
        r#"
[schemas.registry]
url = "{url}"

[[routes]]
name = "to-json"
source_topics = ["{avro_in}"]
plugin = "{plugin}"
default_target = "{json_out}"
dead_letter_topic = "{dead}"
value_format = "schema-registry"
plugin_config = {{ direction = "to-json" }}

[[routes]]
name = "from-json"
source_topics = ["{json_in}"]
plugin = "{plugin}"
default_target = "{avro_out}"
dead_letter_topic = "{dead}"
plugin_config = {{ direction = "from-json", subject = "orders-value" }}
[routes.retry]
max_attempts = 30
"#,
        url = registry.url(),
        plugin = plugin.display()
    );
    let config = switchyard_tests::router_config(&random_topic("group"), &routes).unwrap();
    let orders: Vec<&IndependentRecord> = ["avro 0", "avro 1"]
        .iter()
        .map(|n| case(&records, n))
        .collect();
    produce(
        &avro_in,
        &orders.iter().map(|r| framed(&r.bytes)).collect::<Vec<_>>(),
    )
    .unwrap();
    // A legacy producer's JSON, and one that does not fit the schema.
    let mut json_records: Vec<TestRecord> = orders
        .iter()
        .map(|r| framed(r.value.to_string().as_bytes()))
        .collect();
    json_records.push(framed(br#"{"id": "seven"}"#));
    produce(&json_in, &json_records).unwrap();

    let (handle, failures) = start(&config);
    // Avro to JSON: what the independent encoder was given.
    let json = consume(&json_out, 2, READ_TIMEOUT).unwrap();
    for (out, order) in json.iter().zip(&orders) {
        let value: serde_json::Value =
            serde_json::from_slice(out.value.as_deref().unwrap()).unwrap();
        assert_eq!(value, order.value, "{}", order.case);
        assert_eq!(out.header_str("content-type"), Some("application/json"));
    }
    // JSON to Avro: the serializer's bytes, to the byte.
    let avro = consume(&avro_out, 2, READ_TIMEOUT).unwrap();
    for (out, order) in avro.iter().zip(&orders) {
        assert_eq!(
            out.value.as_deref(),
            Some(order.bytes.as_slice()),
            "{}",
            order.case
        );
    }
    let dead_letters = consume(&dead, 1, READ_TIMEOUT).unwrap();
    assert_eq!(dead_letters[0].header_str("dlq-error-kind"), Some("reject"));
    let reason = dead_letters[0].header_str("dlq-error").unwrap();
    assert!(
        reason.contains("schema 2 (Avro)") && reason.contains("'id'"),
        "{reason}"
    );
    stop(handle);
    let failed: Vec<String> = failures
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|f| f.2.clone())
        .collect();
    assert_eq!(failed, vec!["reject".to_owned()]);

    // And the independent decoder reads what Switchyard wrote.
    let written: Vec<(String, String, Vec<u8>)> = avro
        .iter()
        .zip(&orders)
        .map(|(out, order)| {
            (
                order.case.clone(),
                order.kind.clone(),
                out.value.clone().unwrap(),
            )
        })
        .collect();
    for (name, value) in switchyard_tests::decoded_independently(&written).unwrap() {
        assert_eq!(value, case(&records, &name).value, "{name}");
    }
}

/// The Avro schema `schema` with the first use of the named type `name`
/// replaced by its definition, `definition`: the same schema without a
/// reference.
fn inlined(schema: &str, name: &str, definition: &str) -> String {
    fn replace(node: &mut serde_json::Value, name: &str, with: &mut Option<serde_json::Value>) {
        match node {
            serde_json::Value::String(s) if s == name => {
                if let Some(definition) = with.take() {
                    *node = definition;
                }
            }
            serde_json::Value::Array(items) => {
                for item in items {
                    replace(item, name, with);
                }
            }
            serde_json::Value::Object(fields) => {
                for (_, value) in fields.iter_mut() {
                    replace(value, name, with);
                }
            }
            _ => {}
        }
    }
    let mut schema: serde_json::Value = serde_json::from_str(schema).unwrap();
    let mut definition = Some(serde_json::from_str(definition).unwrap());
    replace(&mut schema, name, &mut definition);
    assert!(definition.is_none(), "{name} is not used");
    schema.to_string()
}

#[test]
fn json_becomes_avro_with_a_schema_the_route_registers_in_each_language_and_only_where_it_may() {
    use switchyard::schema::dir::SchemaDir;
    use switchyard_tests::registry::FIRST_REGISTERED_ID;

    let dir = tempfile::tempdir().unwrap();
    let records = switchyard_tests::independent_records(dir.path()).unwrap();
    let registry = TestRegistry::start(dir.path().join("schemas")).unwrap();
    let orders: Vec<&IndependentRecord> = ["avro 0", "avro 1"]
        .iter()
        .map(|n| case(&records, n))
        .collect();
    // The orders' schema, its reference to Money written out in place: a
    // schema the registry does not have yet, that writes the same bytes.
    let schemas = SchemaDir::open(&dir.path().join("schemas")).unwrap();
    let id = u32::from_be_bytes(orders[0].bytes[1..5].try_into().unwrap());
    let order = schemas.by_id(id).unwrap().unwrap();
    let money = &order.references[0];
    let (_, _, money_text) = schemas
        .by_subject(&money.subject, Some(money.version))
        .unwrap()
        .unwrap();
    let schema = inlined(&order.text, &money.name, &money_text.text);

    let dead = random_topic("dead");
    let mut topics = vec![(dead.clone(), 1)];
    let mut routes = format!("[schemas.registry]\nurl = \"{}\"\n", registry.url());
    let mut route = |name: &str, plugin: &Path, register: bool, with_schema: bool| {
        let (source, target) = (random_topic(name), random_topic(&format!("{name}-out")));
        let config = if with_schema {
            format!(
                "{{ direction = \"from-json\", subject = \"orders-inline-value\", schema = '''{schema}''' }}"
            )
        } else {
            "{ direction = \"from-json\", subject = \"orders-value\" }".to_owned()
        };
        routes.push_str(&format!(
            r#"
[[routes]]
name = "{name}"
source_topics = ["{source}"]
plugin = "{plugin}"
default_target = "{target}"
dead_letter_topic = "{dead}"
register_schemas = {register}
plugin_config = {config}
[routes.retry]
max_attempts = 30
"#,
            plugin = plugin.display()
        ));
        topics.push((source.clone(), 1));
        topics.push((target.clone(), 1));
        (source, target)
    };
    let languages = [
        ("rust", fixtures::json_bridge()),
        ("python", fixtures::python("json-bridge")),
        ("typescript", fixtures::typescript("json-bridge")),
    ];
    // Per language: a route that registers its schema, and one that
    // writes with a subject's latest.
    let flows: Vec<_> = languages
        .iter()
        .map(|(language, plugin)| {
            (
                *language,
                route(&format!("{language}-registers"), plugin, true, true),
                route(&format!("{language}-by-subject"), plugin, false, false),
            )
        })
        .collect();
    let (refused_in, _) = route("may-not", &languages[0].1, false, true);
    create_topics(
        &topics
            .iter()
            .map(|(t, p)| (t.as_str(), *p))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let config = switchyard_tests::router_config(&random_topic("group"), &routes).unwrap();
    let json: Vec<TestRecord> = orders
        .iter()
        .map(|r| framed(r.value.to_string().as_bytes()))
        .collect();
    for (_, (registers, _), (by_subject, _)) in &flows {
        produce(registers, &json).unwrap();
        produce(by_subject, &json).unwrap();
    }
    produce(&refused_in, &json[..1]).unwrap();

    let (handle, failures) = start(&config);
    for (language, (_, registered_out), (_, by_subject_out)) in &flows {
        let avro = consume(registered_out, 2, READ_TIMEOUT).unwrap();
        for (out, order) in avro.iter().zip(&orders) {
            let bytes = out.value.as_deref().unwrap();
            // Framed with the ID the registry gave the new schema, and the
            // body the independent encoder wrote, to the byte.
            let what = format!("{language}, {}", order.case);
            assert_eq!(bytes[0], 0, "{what}");
            assert_eq!(bytes[1..5], FIRST_REGISTERED_ID.to_be_bytes(), "{what}");
            assert_eq!(bytes[5..], order.bytes[5..], "{what}");
        }
        // With the subject's latest: the serializer's bytes, to the byte.
        let avro = consume(by_subject_out, 2, READ_TIMEOUT).unwrap();
        for (out, order) in avro.iter().zip(&orders) {
            assert_eq!(
                out.value.as_deref(),
                Some(order.bytes.as_slice()),
                "{language}, {}",
                order.case
            );
        }
    }
    let registered = registry.registered();
    assert_eq!(registered.len(), 1, "registered once for every route");
    assert_eq!(registered[0].0, "orders-inline-value");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&registered[0].1.text).unwrap(),
        serde_json::from_str::<serde_json::Value>(&schema).unwrap()
    );
    assert_eq!(
        registry.requests("POST /subjects/orders-inline-value/versions"),
        1
    );

    // The route that may not register: its record is rejected, saying how
    // to allow it.
    let dead_letters = consume(&dead, 1, READ_TIMEOUT).unwrap();
    assert_eq!(dead_letters[0].header_str("dlq-error-kind"), Some("reject"));
    let reason = dead_letters[0].header_str("dlq-error").unwrap();
    assert!(
        reason.contains("route 'may-not' does not register schemas")
            && reason.contains("register_schemas = true"),
        "{reason}"
    );
    stop(handle);
    assert_eq!(failures.0.lock().unwrap().len(), 1);
}
