//! The schema-registry client and the schema store against a registry on
//! loopback (`switchyard_tests::registry`: the Confluent API served from a
//! schema directory), in each of the ways a registry fails.
#![allow(clippy::unwrap_used, clippy::panic, reason = "test code")]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard::schema::registry::{Auth, FetchError, Registry, RegistrySettings};
use switchyard::schema::store::{
    Lookup, MAX_REGISTERED_TEXT, MAX_REGISTRATIONS, SchemaStore, SubjectLookup,
};
use switchyard::schema::{Format, Reference};
use switchyard_tests::registry::{FIRST_REGISTERED_ID, Mode, TestRegistry};

const MONEY: &str = r#"{"type": "record", "name": "Money", "namespace": "shop", "fields": [{"name": "cents", "type": "long"}]}"#;
const ORDER: &str = r#"{"type": "record", "name": "Order", "namespace": "shop", "fields": [{"name": "total", "type": "shop.Money"}]}"#;

/// A directory with Money (ID 1, subject `money` version 1), Order (ID 2,
/// referencing Money) and a Protobuf schema (ID 3).
fn schemas(dir: &Path) {
    let answer = |schema: &str, extra: serde_json::Value| {
        let mut answer = serde_json::json!({"schema": schema});
        answer
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        answer.to_string()
    };
    std::fs::write(
        dir.join("1.json"),
        answer(
            MONEY,
            serde_json::json!({"subject": "money", "version": 1, "id": 1}),
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("2.json"),
        answer(
            ORDER,
            serde_json::json!({"references": [{"name": "shop.Money", "subject": "money", "version": 1}]}),
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("3.proto"),
        "syntax = \"proto3\";\nmessage Ping { int64 at = 1; }\n",
    )
    .unwrap();
}

fn settings(url: &str) -> RegistrySettings {
    RegistrySettings {
        url: url.to_owned(),
        auth: Auth::None,
        ca_file: None,
        client_cert: None,
        timeout: Duration::from_millis(500),
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    registry: TestRegistry,
    runtime: tokio::runtime::Runtime,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    schemas(dir.path());
    let registry = TestRegistry::start(dir.path()).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    Fixture {
        _dir: dir,
        registry,
        runtime,
    }
}

impl Fixture {
    fn store(&self, settings: &RegistrySettings) -> Arc<SchemaStore> {
        let _entered = self.runtime.enter();
        let registry = Registry::new(settings).unwrap();
        Arc::new(SchemaStore::new(
            None,
            Some(registry),
            Some(self.runtime.handle().clone()),
        ))
    }

    fn client(&self) -> Registry {
        let _entered = self.runtime.enter();
        Registry::new(&settings(&self.registry.url())).unwrap()
    }
}

/// What the store settles on for `id`, waiting up to 10 s for it.
fn settled(store: &Arc<SchemaStore>, id: u32) -> Lookup {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store.lookup(id) {
            Lookup::Pending(_) if Instant::now() < deadline => {
                store.wait(id, Duration::from_millis(200))
            }
            other => return other,
        }
    }
}

/// Waits until the store's fetch of `id` has failed at least once, and
/// gives the reason.
fn pending_reason(store: &Arc<SchemaStore>, id: u32) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store.lookup(id) {
            Lookup::Pending(Some(reason)) => return reason.to_string(),
            Lookup::Pending(None) if Instant::now() < deadline => {
                store.wait(id, Duration::from_millis(50))
            }
            other => panic!("schema {id} should still be pending, with a reason: {other:?}"),
        }
    }
}

#[test]
fn the_client_reads_schemas_by_id_and_subject_versions() {
    let f = fixture();
    let client = f.client();
    let order = f.runtime.block_on(client.by_id(2)).unwrap();
    assert_eq!(order.format, Format::Avro);
    assert_eq!(order.text, ORDER);
    assert_eq!(
        order.references,
        vec![Reference {
            name: "shop.Money".to_owned(),
            subject: "money".to_owned(),
            version: 1
        }]
    );
    let (id, money) = f
        .runtime
        .block_on(client.by_subject("money", Some(1)))
        .unwrap();
    assert_eq!((id, money.text.as_str()), (1, MONEY));
    let (id, _) = f
        .runtime
        .block_on(client.by_subject("money", None))
        .unwrap();
    assert_eq!(id, 1, "latest");
    let ping = f.runtime.block_on(client.by_id(3)).unwrap();
    assert_eq!(ping.format, Format::Protobuf);
    f.runtime.block_on(client.ping()).unwrap();
}

#[test]
fn what_the_registry_does_not_have_is_not_found_and_says_so() {
    let f = fixture();
    let client = f.client();
    match f.runtime.block_on(client.by_id(404)) {
        Err(FetchError::NotFound(reason)) => {
            assert!(
                reason.contains("schema 404") && reason.contains("40403"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    match f.runtime.block_on(client.by_subject("nope/value", Some(2))) {
        Err(FetchError::NotFound(reason)) => {
            assert!(
                reason.contains("version 2 of subject 'nope/value'"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_schema_is_fetched_once_with_its_references_however_many_records_ask() {
    let f = fixture();
    let store = f.store(&settings(&f.registry.url()));
    for _ in 0..50 {
        assert!(matches!(
            store.lookup(2),
            Lookup::Pending(_) | Lookup::Ready(_)
        ));
    }
    match settled(&store, 2) {
        Lookup::Ready(schema) => assert_eq!(schema.format(), Format::Avro),
        other => panic!("{other:?}"),
    }
    for _ in 0..50 {
        assert!(matches!(store.lookup(2), Lookup::Ready(_)));
    }
    assert_eq!(f.registry.requests("/schemas/ids/2"), 1);
    assert_eq!(f.registry.requests("/subjects/money/versions/1"), 1);
    assert!(
        store
            .stats()
            .hits
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 50
    );
    assert_eq!(
        store
            .stats()
            .registry_ok
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

#[test]
fn an_id_the_registry_does_not_know_fails_its_records() {
    let f = fixture();
    let store = f.store(&settings(&f.registry.url()));
    match settled(&store, 77) {
        Lookup::Failed(reason) => assert!(reason.contains("schema 77"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // Remembered: no second request while it is.
    assert!(matches!(store.lookup(77), Lookup::Failed(_)));
    assert_eq!(f.registry.requests("/schemas/ids/77"), 1);
}

/// A registry failing as `mode` says keeps the schema pending, with a
/// reason that contains `says`; once it answers again, the schema is
/// ready.
fn waits_out(mode: Mode, says: &str) {
    let f = fixture();
    f.registry.set_mode(mode.clone());
    let store = f.store(&settings(&f.registry.url()));
    let reason = pending_reason(&store, 1);
    assert!(reason.contains(says), "{mode:?}: {reason}");
    assert!(store.registry_down().is_some(), "{mode:?}");
    // Still pending a while later: nothing fails for an outage.
    store.wait(1, Duration::from_millis(300));
    assert!(
        matches!(store.lookup(1), Lookup::Pending(Some(_))),
        "{mode:?}"
    );
    f.registry.set_mode(Mode::Normal);
    assert!(matches!(settled(&store, 1), Lookup::Ready(_)), "{mode:?}");
    assert!(store.registry_down().is_none());
}

#[test]
fn records_wait_while_the_registry_answers_503() {
    waits_out(Mode::Unavailable, "503");
}

#[test]
fn records_wait_while_the_registry_closes_connections_unanswered() {
    waits_out(Mode::Hangs, "GET http://127.0.0.1");
}

#[test]
fn records_wait_while_the_registry_is_slower_than_the_timeout() {
    waits_out(
        Mode::Slow(Duration::from_millis(1500)),
        "no answer within 500 ms",
    );
}

#[test]
fn records_wait_while_a_404_is_not_the_registry_s() {
    waits_out(Mode::PlainNotFound, "is it the registry's URL?");
}

#[test]
fn records_wait_while_the_registry_s_answers_are_malformed() {
    waits_out(Mode::Malformed, "is not a schema");
}

#[test]
fn a_slow_registry_within_the_timeout_is_just_slow() {
    let f = fixture();
    f.registry.set_mode(Mode::Slow(Duration::from_millis(150)));
    let store = f.store(&settings(&f.registry.url()));
    assert!(matches!(settled(&store, 3), Lookup::Ready(_)));
}

#[test]
fn refused_credentials_keep_records_waiting_and_good_ones_are_sent() {
    let f = fixture();
    f.registry.require_basic("key", "s3cret");
    let store = f.store(&settings(&f.registry.url()));
    let reason = pending_reason(&store, 1);
    assert!(
        reason.contains("refused the credentials") && reason.contains("401"),
        "{reason}"
    );
    assert!(!reason.contains("s3cret"));

    let mut with_credentials = settings(&f.registry.url());
    with_credentials.auth = Auth::Basic {
        username: "key".to_owned(),
        password: "s3cret".to_owned(),
    };
    let store = f.store(&with_credentials);
    assert!(matches!(settled(&store, 1), Lookup::Ready(_)));
}

#[test]
fn a_registry_that_is_not_there_keeps_records_waiting() {
    let f = fixture();
    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = f.store(&settings(&format!("http://127.0.0.1:{port}")));
    let reason = pending_reason(&store, 1);
    assert!(reason.contains(&format!("127.0.0.1:{port}")), "{reason}");
}

const PING: &str = r#"{"type": "record", "name": "Ping", "namespace": "shop", "fields": [{"name": "at", "type": "long"}]}"#;

/// What the store settles on for registering `text` under `subject`,
/// asking again until it is no longer pending (10 s at most).
fn registration(store: &Arc<SchemaStore>, subject: &str, text: &str) -> SubjectLookup {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store.register(subject, Format::Avro, text) {
            SubjectLookup::Pending(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

#[test]
fn a_schema_is_registered_once_and_written_with_the_id_the_registry_gives() {
    let f = fixture();
    let store = f.store(&settings(&f.registry.url()));
    assert!(matches!(
        store.register("pings-value", Format::Avro, PING),
        SubjectLookup::Pending(None)
    ));
    let SubjectLookup::Ready(id) = registration(&store, "pings-value", PING) else {
        panic!("not registered")
    };
    assert_eq!(id, FIRST_REGISTERED_ID);
    // Asked again (another record, another instance): the ID known.
    for _ in 0..3 {
        assert!(matches!(
            store.register("pings-value", Format::Avro, PING),
            SubjectLookup::Ready(again) if again == id
        ));
    }
    assert_eq!(
        f.registry.requests("POST /subjects/pings-value/versions"),
        1
    );
    let registered = f.registry.registered();
    assert_eq!(registered.len(), 1);
    assert_eq!(registered[0].0, "pings-value");
    assert_eq!(registered[0].1.text, PING);
    // Its schema is fetched by ID for writing, as any other.
    let Lookup::Ready(schema) = settled(&store, id) else {
        panic!("schema {id} not ready")
    };
    assert_eq!(
        schema.encode(&serde_json::json!({"at": 3}), None).unwrap(),
        [0, 0, 0, 3, 232, 6]
    );
    // A schema the registry already has keeps its ID under a new subject.
    assert!(matches!(
        registration(&store, "money-copy", MONEY),
        SubjectLookup::Ready(1)
    ));
}

#[test]
fn a_schema_the_registry_refuses_fails_with_the_registry_s_reason() {
    let f = fixture();
    f.registry.refuse_registrations(true);
    let store = f.store(&settings(&f.registry.url()));
    let SubjectLookup::Failed(reason) = registration(&store, "pings-value", PING) else {
        panic!("not refused")
    };
    assert!(
        reason.contains("incompatible")
            && reason.contains("40901")
            && reason.contains("'pings-value'"),
        "{reason}"
    );
    // Not asked again for every record.
    assert!(matches!(
        store.register("pings-value", Format::Avro, PING),
        SubjectLookup::Failed(_)
    ));
    assert_eq!(
        f.registry.requests("POST /subjects/pings-value/versions"),
        1
    );
    assert_eq!(
        store
            .stats()
            .registry_refused
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn a_schema_that_does_not_compile_is_never_sent() {
    let f = fixture();
    let store = f.store(&settings(&f.registry.url()));
    let SubjectLookup::Failed(reason) = registration(
        &store,
        "pings-value",
        r#"{"type": "recrd", "name": "Ping"}"#,
    ) else {
        panic!("registered")
    };
    assert!(
        reason.contains("does not compile") && reason.contains("'pings-value'"),
        "{reason}"
    );
    assert_eq!(
        f.registry.requests("POST /subjects/pings-value/versions"),
        0
    );
}

#[test]
fn registering_waits_out_a_registry_that_is_down() {
    let f = fixture();
    f.registry.set_mode(Mode::Unavailable);
    let store = f.store(&settings(&f.registry.url()));
    let deadline = Instant::now() + Duration::from_secs(10);
    let reason = loop {
        match store.register("pings-value", Format::Avro, PING) {
            SubjectLookup::Pending(Some(reason)) => break reason,
            SubjectLookup::Pending(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => panic!("should be pending with a reason: {other:?}"),
        }
    };
    assert!(reason.contains("503"), "{reason}");
    assert!(store.registry_down().is_some());
    f.registry.set_mode(Mode::Normal);
    assert!(matches!(
        registration(&store, "pings-value", PING),
        SubjectLookup::Ready(FIRST_REGISTERED_ID)
    ));
}

#[test]
fn a_plugin_cannot_register_schemas_without_bound() {
    let f = fixture();
    let store = f.store(&settings(&f.registry.url()));
    let schema = |n: usize| {
        format!(
            r#"{{"type": "record", "name": "R{n}", "fields": [{{"name": "a", "type": "long"}}]}}"#
        )
    };
    for n in 0..MAX_REGISTRATIONS {
        assert!(!matches!(
            store.register("many-value", Format::Avro, &schema(n)),
            SubjectLookup::Failed(_)
        ));
    }
    let SubjectLookup::Failed(reason) =
        store.register("many-value", Format::Avro, &schema(MAX_REGISTRATIONS))
    else {
        panic!("past the bound, a new schema was taken")
    };
    assert!(reason.contains("already registered"), "{reason}");
    // One already known is still answered.
    assert!(!matches!(
        store.register("many-value", Format::Avro, &schema(0)),
        SubjectLookup::Failed(_)
    ));
}

#[test]
fn registering_needs_a_registry_and_a_bounded_schema() {
    let dir = tempfile::tempdir().unwrap();
    let offline = Arc::new(SchemaStore::new(
        Some(switchyard::schema::dir::SchemaDir::open(dir.path()).unwrap()),
        None,
        None,
    ));
    let SubjectLookup::Failed(reason) = offline.register("pings-value", Format::Avro, PING) else {
        panic!("registered without a registry")
    };
    assert!(reason.contains("[schemas.registry]"), "{reason}");

    let f = fixture();
    let store = f.store(&settings(&f.registry.url()));
    let huge = " ".repeat(MAX_REGISTERED_TEXT + 1);
    let SubjectLookup::Failed(reason) = store.register("pings-value", Format::Avro, &huge) else {
        panic!("a huge schema was taken")
    };
    assert!(reason.contains("bytes long"), "{reason}");
}

#[test]
fn a_subject_s_latest_version_is_asked_for_again_once_its_ttl_passed() {
    let f = fixture();
    let store = {
        let _entered = f.runtime.enter();
        let registry = Registry::new(&settings(&f.registry.url())).unwrap();
        Arc::new(
            SchemaStore::new(None, Some(registry), Some(f.runtime.handle().clone()))
                .with_subject_ttl(Duration::from_millis(200)),
        )
    };
    let latest = |want: u32| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match store.latest("money") {
                SubjectLookup::Ready(id) if id == want => return,
                SubjectLookup::Failed(reason) => panic!("{reason}"),
                _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                other => panic!("subject 'money' never got to {want}: {other:?}"),
            }
        }
    };
    latest(1);
    // A new version, registered by someone else.
    let client = f.client();
    let newer = f
        .runtime
        .block_on(client.register(
            "money",
            &switchyard::schema::SchemaText {
                format: Format::Avro,
                text: PING.to_owned(),
                references: Vec::new(),
            },
        ))
        .unwrap();
    assert_eq!(newer, FIRST_REGISTERED_ID);
    latest(newer);
}
