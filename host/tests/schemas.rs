//! Records in the schema-registry wire format written and read by
//! encoders that are not Switchyard's (confluent-kafka's serializers and
//! fastavro, `tests/schemas/independent.py`): Switchyard reads theirs, and they
//! read Switchyard's.
#![allow(clippy::unwrap_used, clippy::panic, reason = "test code")]

use std::path::Path;

use serde_json::{Value, json};
use std::sync::Arc;

use switchyard::schema::dir::SchemaDir;
use switchyard::schema::store::{Lookup, SchemaStore};
use switchyard::schema::{Compiled, DecodeError, Format, wire};

struct Case {
    name: String,
    topic: String,
    bytes: Vec<u8>,
    value: Value,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The independent encoders' records, and the directory of their schemas.
fn encoded() -> (tempfile::TempDir, Vec<Case>) {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<Case> = switchyard_tests::independent_records(dir.path())
        .unwrap()
        .into_iter()
        .map(|r| Case {
            name: r.case,
            topic: r.kind,
            bytes: r.bytes,
            value: r.value,
        })
        .collect();
    assert_eq!(cases.len(), 8, "every case of the script");
    (dir, cases)
}

/// A store of the schemas in `dir` alone.
fn store(dir: &Path) -> Arc<SchemaStore> {
    Arc::new(SchemaStore::new(
        Some(SchemaDir::open(dir).unwrap()),
        None,
        None,
    ))
}

fn compiled(dir: &Path, framed: &[u8]) -> Arc<Compiled> {
    let (id, _) = wire::split(framed).unwrap();
    match store(&dir.join("schemas")).lookup(id) {
        Lookup::Ready(schema) => schema,
        other => panic!("schema {id}: {other:?}"),
    }
}

#[test]
fn records_of_independent_encoders_decode_to_what_they_wrote() {
    let (dir, cases) = encoded();
    for case in &cases {
        let schema = compiled(dir.path(), &case.bytes);
        schema.validate(&case.bytes).unwrap();
        assert_eq!(
            schema.decode(&case.bytes).unwrap(),
            case.value,
            "{}",
            case.name
        );
    }
    let formats: Vec<Format> = cases
        .iter()
        .map(|c| compiled(dir.path(), &c.bytes).format())
        .collect();
    for format in [Format::Avro, Format::Protobuf, Format::Json] {
        assert!(formats.contains(&format), "a {} case", format.name());
    }
}

#[test]
fn a_field_is_read_by_its_path() {
    let (dir, cases) = encoded();
    let case = |name: &str| cases.iter().find(|c| c.name == name).unwrap();
    let field = |name: &str, path: &[&str]| {
        let case = case(name);
        compiled(dir.path(), &case.bytes)
            .field(&case.bytes, path)
            .unwrap()
    };
    // Avro: nested records, a union, an array item, a map value, a
    // referenced type's enum, a fixed.
    assert_eq!(
        field("avro 0", &["customer", "region"]),
        Some(json!("eu-west"))
    );
    assert_eq!(field("avro 1", &["customer", "region"]), Some(Value::Null));
    assert_eq!(field("avro 0", &["lines", "1", "sku"]), Some(json!("B-2")));
    assert_eq!(field("avro 0", &["tags", "channel"]), Some(json!("web")));
    assert_eq!(field("avro 0", &["total", "currency"]), Some(json!("EUR")));
    assert_eq!(field("avro 1", &["note"]), Some(json!(42)));
    assert_eq!(
        field("avro 0", &["digest"]),
        Some(json!("\u{0}\u{1}\u{fe}\u{ff}"))
    );
    assert_eq!(field("avro 0", &["paid"]), Some(json!(true)));
    // Paths that lead nowhere.
    assert_eq!(field("avro 0", &["customer", "nope"]), None);
    assert_eq!(field("avro 0", &["lines", "2", "sku"]), None);
    assert_eq!(field("avro 0", &["tags", "missing"]), None);
    assert_eq!(field("avro 0", &["id", "deeper"]), None);
    // Protobuf: a field of the second message, of a nested message.
    assert_eq!(field("protobuf 0", &["region"]), Some(json!("eu-west")));
    assert_eq!(
        field("protobuf 0", &["parcels", "1", "weight_grams"]),
        Some(json!(1200))
    );
    assert_eq!(field("protobuf nested 0", &["fragile"]), Some(json!(true)));
    // JSON Schema.
    assert_eq!(field("json 0", &["tenant"]), Some(json!("acme")));
    assert_eq!(field("json 1", &["count"]), None);
}

#[test]
fn what_switchyard_writes_is_what_the_independent_encoders_write_and_read() {
    let (dir, cases) = encoded();
    let mut written = Vec::new();
    for case in &cases {
        let schema = compiled(dir.path(), &case.bytes);
        let message = (case.topic == "parcels").then_some("shop.Shipment.Parcel");
        let message = if case.topic == "shipments" {
            Some("Shipment")
        } else {
            message
        };
        let bytes = schema.encode(&case.value, message).unwrap();
        // The same value, the same schema: the same bytes (Avro and
        // Protobuf encodings are deterministic here; the JSON is compact).
        assert_eq!(hex(&bytes), hex(&case.bytes), "{}", case.name);
        written.push((case.name.clone(), case.topic.clone(), bytes));
    }
    // And the independent decoders read them back.
    let read = switchyard_tests::decoded_independently(&written).unwrap();
    assert_eq!(read.len(), cases.len());
    for ((name, value), case) in read.iter().zip(&cases) {
        assert_eq!(name, &case.name);
        assert_eq!(value, &case.value, "{name}");
    }
}

#[test]
fn avro_json_round_trips_through_switchyard_alone() {
    let (dir, cases) = encoded();
    for case in cases.iter().filter(|c| c.topic == "orders") {
        let schema = compiled(dir.path(), &case.bytes);
        let json = schema.decode(&case.bytes).unwrap();
        assert_eq!(
            schema.encode(&json, None).unwrap(),
            case.bytes,
            "{}",
            case.name
        );
    }
}

#[test]
fn bad_bytes_are_errors_that_name_the_schema_and_the_field() {
    let (dir, cases) = encoded();
    let order = &cases.iter().find(|c| c.name == "avro 0").unwrap().bytes;
    let schema = compiled(dir.path(), order);
    let reason = |bytes: &[u8]| schema.validate(bytes).unwrap_err().to_string();

    // Truncated framing, and bytes that are not framed at all.
    assert!(matches!(
        schema.validate(&order[..3]),
        Err(DecodeError::Framing(wire::FramingError::Truncated {
            len: 3
        }))
    ));
    assert!(reason(b"{\"id\": 1}").contains("magic byte"));
    // A body cut short: the field where it ended is named.
    let cut = reason(&order[..order.len() - 2]);
    assert!(
        cut.contains("schema 2 (Avro)") && cut.contains("at 'raw'"),
        "{cut}"
    );
    // Bytes left over.
    let mut longer = order.clone();
    longer.push(0);
    assert!(reason(&longer).contains("left over"), "{}", reason(&longer));
    // An out-of-range union branch (the customer's region: index 9).
    let mut bad_union = order.clone();
    let at = order.windows(2).position(|w| w == [0x06, b'A']).unwrap() + 4;
    assert_eq!(bad_union[at], 2, "the region's branch index");
    bad_union[at] = 18;
    let union = reason(&bad_union);
    assert!(
        union.contains("customer.region") && union.contains("branch 9"),
        "{union}"
    );
    // A record written with another schema.
    let mut other = order.clone();
    other[4] = 1;
    assert!(reason(&other).contains("written with schema 1"));
}

#[test]
fn missing_and_broken_schemas_are_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("7.avsc"),
        "{\"type\": \"record\", \"name\": \"X\"}",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("8.json"),
        r#"{"schema": "{\"type\": \"record\", \"name\": \"Y\", \"fields\": [{\"name\": \"m\", \"type\": \"Money\"}]}",
            "references": [{"name": "Money", "subject": "money", "version": 3}]}"#,
    )
    .unwrap();
    std::fs::write(dir.path().join("9.json"), "not json").unwrap();
    std::fs::write(
        dir.path().join("10.proto"),
        "syntax = \"proto3\"; message M { int32 a = 1 }",
    )
    .unwrap();
    let store = store(dir.path());
    let failed = |id| match store.lookup(id) {
        Lookup::Failed(reason) => reason.to_string(),
        other => panic!("schema {id}: {other:?}"),
    };

    let err = failed(6);
    assert!(err.contains("schema 6 is in no schema source"), "{err}");
    let err = failed(7);
    assert!(
        err.contains("schema 7 (Avro) does not compile") && err.contains("fields"),
        "{err}"
    );
    let err = failed(8);
    assert!(
        err.contains("schema 8 references 'Money'") && err.contains("version 3 of subject 'money'"),
        "{err}"
    );
    let err = failed(9);
    assert!(
        err.contains("9.json") && err.contains("not a registry answer"),
        "{err}"
    );
    let err = failed(10);
    assert!(err.contains("expected"), "{err}");
}

/// The lines `switchyard route` prints for `input` through `plugin`
/// (`args` added), and its stderr.
fn route_offline(plugin: &Path, args: &[&str], input: &str) -> (Vec<Value>, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("route")
        .arg(plugin)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (lines, String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn the_field_router_in_rust_python_and_typescript_routes_every_format_alike() {
    use base64::Engine as _;
    let (dir, cases) = encoded();
    let mut input = String::new();
    for case in &cases {
        let line =
            json!({"value_b64": base64::engine::general_purpose::STANDARD.encode(&case.bytes)});
        input.push_str(&line.to_string());
        input.push('\n');
    }
    let schemas = dir.path().join("schemas");
    let args = [
        "--schemas",
        schemas.to_str().unwrap(),
        "-c",
        // Protobuf shipments have a region; Avro orders have it one level
        // down (none here), JSON events none: both ways are compared.
        "field=region",
        "-c",
        "topic_prefix=t-",
        "--allow",
        "t-*",
        "--target",
        "t-default",
    ];
    let plugins = [
        switchyard_plugin_fixtures::field_router(),
        switchyard_plugin_fixtures::python("field-router"),
        switchyard_plugin_fixtures::typescript("field-router"),
    ];
    let mut answers = Vec::new();
    for plugin in &plugins {
        let (lines, stderr) = route_offline(plugin, &args, &input);
        assert_eq!(lines.len(), cases.len(), "{}: {stderr}", plugin.display());
        answers.push(lines);
    }
    let topics: Vec<&Value> = answers[0]
        .iter()
        .map(|l| &l["outputs"][0]["topic"])
        .collect();
    // Protobuf shipment 0 has region eu-west; Avro orders have no
    // top-level region; the others none or an empty one.
    assert!(topics.contains(&&json!("t-eu-west")), "{topics:?}");
    assert!(topics.contains(&&json!("t-default")), "{topics:?}");
    for (plugin, lines) in plugins.iter().zip(&answers).skip(1) {
        assert_eq!(
            lines,
            &answers[0],
            "{} answers as the Rust version",
            plugin.display()
        );
    }
}

#[test]
fn switchyard_route_reads_records_by_schema_from_a_directory_offline() {
    use base64::Engine as _;
    let (dir, cases) = encoded();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let order = &cases.iter().find(|c| c.name == "avro 0").unwrap().bytes;
    let mut input = String::new();
    for bytes in [
        &order[..],
        &cases.iter().find(|c| c.name == "avro 1").unwrap().bytes,
        &order[..order.len() - 1],
        b"plain",
    ] {
        input.push_str(&json!({"value_b64": b64(bytes)}).to_string());
        input.push('\n');
    }
    let schemas = dir.path().join("schemas");
    let plugin = switchyard_plugin_fixtures::field_router();
    let args = [
        "--schemas",
        schemas.to_str().unwrap(),
        "-c",
        "field=customer.region",
        "-c",
        "topic_prefix=o-",
        "--target",
        "o-default",
        "--allow",
        "o-*",
    ];
    let (lines, stderr) = route_offline(&plugin, &args, &input);
    assert_eq!(lines.len(), 4, "{stderr}");
    assert_eq!(lines[0]["outputs"][0]["topic"], json!("o-eu-west"));
    assert_eq!(
        lines[0]["outputs"][0]["value_b64"],
        json!(b64(order)),
        "forwarded as consumed"
    );
    assert_eq!(lines[1]["outputs"][0]["topic"], json!("o-default"));
    for (line, says) in [(&lines[2], "schema 2 (Avro)"), (&lines[3], "magic byte")] {
        assert_eq!(line["error"]["kind"], json!("schema"), "{line}");
        assert!(
            line["error"]["message"].as_str().unwrap().contains(says),
            "{line}"
        );
    }
}

#[test]
fn keys_are_read_by_schema_when_the_route_says_so() {
    use base64::Engine as _;
    let (dir, cases) = encoded();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let order = &cases.iter().find(|c| c.name == "avro 0").unwrap().bytes;
    let mut input = String::new();
    // A framed key with a plain value; then a key that is not framed.
    for key in [&order[..], b"plain-key"] {
        input.push_str(&json!({"key_b64": b64(key), "value": "not framed"}).to_string());
        input.push('\n');
    }
    let schemas = dir.path().join("schemas");
    let args = [
        "--schemas",
        schemas.to_str().unwrap(),
        "--key-format",
        "schema-registry",
        "--value-format",
        "bytes",
    ];
    let (lines, stderr) = route_offline(&switchyard_plugin_fixtures::hello(), &args, &input);
    assert_eq!(lines.len(), 2, "{stderr}");
    assert_eq!(
        lines[0]["outputs"][0]["key_b64"],
        json!(b64(order)),
        "{}",
        lines[0]
    );
    assert_eq!(lines[1]["error"]["kind"], json!("schema"), "{}", lines[1]);
    let message = lines[1]["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("key: ") && message.contains("magic byte"),
        "{message}"
    );
    // Values are not read by schema on this route.
    assert!(
        lines[0]["outputs"][0]["value"] == json!("not framed"),
        "{}",
        lines[0]
    );
}

#[test]
fn json_schema_bodies_are_validated_against_their_schema() {
    let (dir, cases) = encoded();
    let event = &cases.iter().find(|c| c.name == "json 0").unwrap().bytes;
    let schema = compiled(dir.path(), event);
    schema.validate(event).unwrap();
    let framed = |body: &str| {
        let mut bytes = event[..5].to_vec();
        bytes.extend_from_slice(body.as_bytes());
        bytes
    };
    let missing = schema
        .validate(&framed(r#"{"kind": "signup"}"#))
        .unwrap_err()
        .to_string();
    assert!(
        missing.contains("(JSON Schema)") && missing.contains("tenant"),
        "{missing}"
    );
    let wrong = schema
        .validate(&framed(
            r#"{"kind": "signup", "tenant": "acme", "count": "three"}"#,
        ))
        .unwrap_err()
        .to_string();
    assert!(wrong.contains("at '/count'"), "{wrong}");
    // Writing checks too: what the independent decoder would refuse is
    // not written.
    let err = schema.encode(&json!({"kind": 1}), None).unwrap_err();
    assert!(err.contains("kind") || err.contains("tenant"), "{err}");
}

#[test]
fn ids_and_subjects_named_by_records_or_plugins_cannot_grow_the_store_without_bound() {
    use switchyard::schema::store::{MAX_SCHEMAS, MAX_SUBJECTS, SubjectLookup};
    let (dir, _) = encoded();
    let store = store(&dir.path().join("schemas"));
    // IDs the directory does not have: each remembered as not found...
    for id in 1_000..1_000 + u32::try_from(MAX_SCHEMAS).unwrap() {
        assert!(matches!(store.lookup(id), Lookup::Failed(_)));
    }
    // ...until the store holds as many as it keeps: then a new one fails
    // at once, saying why, and the ones it has still answer.
    match store.lookup(2) {
        Lookup::Failed(reason) => assert!(reason.contains("the most it keeps"), "{reason}"),
        other => panic!("{other:?}"),
    }
    match store.lookup(1_000) {
        Lookup::Failed(reason) => assert!(reason.contains("in no schema source"), "{reason}"),
        other => panic!("{other:?}"),
    }
    for i in 0..MAX_SUBJECTS {
        assert!(matches!(
            store.latest(&format!("s{i}")),
            SubjectLookup::Failed(_)
        ));
    }
    match store.latest("orders-value") {
        SubjectLookup::Failed(reason) => assert!(reason.contains("the most it keeps"), "{reason}"),
        other => panic!("{other:?}"),
    }
}
