//! A schema registry for tests: the read side of the Confluent
//! schema-registry API, served on loopback from a directory of schemas
//! (the layout `switchyard::schema::dir` reads), with the failure modes a
//! client must live through switched on at will.
//!
//! No registry product can be installed where the tests run (none is on
//! PyPI, npm, crates.io or Debian); this serves the same answers, error
//! codes included, for what Switchyard asks: `GET /schemas/ids/{id}`,
//! `GET /subjects/{subject}/versions/{version|latest}`,
//! `GET /schemas/types` and `POST /subjects/{subject}/versions`
//! (registering: kept in memory, a schema the registry already has keeping
//! its ID, as a registry does).

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use switchyard::schema::dir::SchemaDir;
use switchyard::schema::{Format, SchemaText};

/// IDs given to the schemas registered with a test registry start here.
pub const FIRST_REGISTERED_ID: u32 = 1000;

/// How the registry answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// As a registry does.
    Normal,
    /// Accepts the connection, then closes it without an answer.
    Hangs,
    /// Answers after this long.
    Slow(Duration),
    /// `503 Service Unavailable`.
    Unavailable,
    /// `404` with an HTML page, as a proxy in front of nothing answers.
    PlainNotFound,
    /// `200` with a body that is not a registry answer.
    Malformed,
}

struct State {
    dir: SchemaDir,
    mode: Mutex<Mode>,
    /// `Authorization` header value required, if any.
    authorization: Mutex<Option<String>>,
    requests: Mutex<HashMap<String, usize>>,
    /// Schemas registered since it started: (subject, schema, ID).
    registered: Mutex<Vec<(String, SchemaText, u32)>>,
    /// Registrations are answered `409 Conflict` (incompatible).
    refuse: AtomicBool,
    stopped: AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running test registry; stops when dropped.
pub struct TestRegistry {
    addr: SocketAddr,
    state: Arc<State>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for TestRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRegistry")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl TestRegistry {
    /// Serves the schemas of `dir` on a free loopback port.
    ///
    /// # Errors
    /// When `dir` is not a directory or no port can be had.
    pub fn start(dir: impl Into<PathBuf>) -> anyhow::Result<Self> {
        let dir = SchemaDir::open(&dir.into())?;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            dir,
            mode: Mutex::new(Mode::Normal),
            authorization: Mutex::new(None),
            requests: Mutex::new(HashMap::new()),
            registered: Mutex::new(Vec::new()),
            refuse: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
        });
        let thread = std::thread::Builder::new()
            .name("test-registry".to_owned())
            .spawn({
                let state = state.clone();
                move || {
                    for stream in listener.incoming() {
                        if state.stopped.load(Ordering::Acquire) {
                            return;
                        }
                        let Ok(stream) = stream else { continue };
                        let state = state.clone();
                        std::thread::spawn(move || serve(&state, stream));
                    }
                }
            })?;
        Ok(Self {
            addr,
            state,
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers from now on as `mode` says.
    pub fn set_mode(&self, mode: Mode) {
        *self
            .state
            .mode
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = mode;
    }

    /// Requires HTTP basic authentication with these credentials.
    pub fn require_basic(&self, username: &str, password: &str) {
        use base64::Engine as _;
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
        *self
            .state
            .authorization
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(format!("Basic {token}"));
    }

    /// Answers registrations from now on as a registry does with a schema
    /// incompatible with the subject's (`409`, error code 40901), if
    /// `refuse`.
    pub fn refuse_registrations(&self, refuse: bool) {
        self.state.refuse.store(refuse, Ordering::Release);
    }

    /// The schemas registered so far: (subject, schema, ID).
    #[must_use]
    pub fn registered(&self) -> Vec<(String, SchemaText, u32)> {
        lock(&self.state.registered).clone()
    }

    /// How many requests for `path` it received (`POST /path` for
    /// registrations; a bare path for reads).
    #[must_use]
    pub fn requests(&self, path: &str) -> usize {
        self.state
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.state.stopped.store(true, Ordering::Release);
        // Wakes the accept loop.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(state: &State, stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut authorization = None;
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("authorization") {
                authorization = Some(value.trim().to_owned());
            } else if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<usize>().unwrap_or(0).min(1 << 20);
            }
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let mut words = request_line.split_whitespace();
    let method = words.next().unwrap_or("GET").to_owned();
    let path = words.next().unwrap_or("/").to_owned();
    let key = if method == "GET" {
        path.clone()
    } else {
        format!("{method} {path}")
    };
    *lock(&state.requests).entry(key).or_default() += 1;
    let request = Incoming {
        method: &method,
        path: &path,
        body: &body,
        authorization: authorization.as_deref(),
    };
    let mode = state
        .mode
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let (status, body) = match mode {
        Mode::Hangs => return,
        Mode::Unavailable => (503, "<html>503 Service Unavailable</html>".to_owned()),
        Mode::PlainNotFound => (404, "<html>404 Not Found</html>".to_owned()),
        Mode::Malformed => (200, "{\"schema\": 42, \"oops\"".to_owned()),
        Mode::Slow(delay) => {
            std::thread::sleep(delay);
            answer(state, &request)
        }
        Mode::Normal => answer(state, &request),
    };
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        409 => "Conflict",
        422 => "Unprocessable Entity",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/vnd.schemaregistry.v1+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn error(status: u16, code: u32, message: &str) -> (u16, String) {
    (
        status,
        json!({"error_code": code, "message": message}).to_string(),
    )
}

/// A request, read.
struct Incoming<'a> {
    method: &'a str,
    path: &'a str,
    body: &'a [u8],
    authorization: Option<&'a str>,
}

/// The registry's answer to `request`.
fn answer(state: &State, request: &Incoming<'_>) -> (u16, String) {
    let Incoming {
        method,
        path,
        body,
        authorization,
    } = *request;
    let required = state
        .authorization
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    if let Some(required) = required
        && authorization != Some(required.as_str())
    {
        return error(401, 40101, "Unauthorized");
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if method == "POST" {
        return match segments.as_slice() {
            ["subjects", subject, "versions"] => register(state, &decode(subject), body),
            _ => error(405, 405, "HTTP 405 Method Not Allowed"),
        };
    }
    match segments.as_slice() {
        ["schemas", "types"] => (200, json!(["AVRO", "JSON", "PROTOBUF"]).to_string()),
        ["schemas", "ids", id] => {
            let Ok(id) = id.parse::<u32>() else {
                return error(404, 40403, "Schema not found");
            };
            let registered = lock(&state.registered)
                .iter()
                .find(|(_, _, known)| *known == id)
                .map(|(_, text, _)| text.clone());
            if let Some(text) = registered {
                return (200, schema_json(&text, None).to_string());
            }
            match state.dir.by_id(id) {
                Ok(Some(text)) => (200, schema_json(&text, None).to_string()),
                Ok(None) => error(404, 40403, &format!("Schema {id} not found")),
                Err(e) => error(500, 50001, &e.to_string()),
            }
        }
        ["subjects", subject, "versions", version] => {
            let subject = decode(subject);
            let version = match *version {
                "latest" | "-1" => None,
                v => match v.parse::<i32>() {
                    Ok(v) => Some(v),
                    Err(_) => return error(422, 42202, "Invalid version"),
                },
            };
            let registered: Vec<(SchemaText, u32)> = lock(&state.registered)
                .iter()
                .filter(|(s, _, _)| *s == subject)
                .map(|(_, text, id)| (text.clone(), *id))
                .collect();
            if !registered.is_empty() {
                // Registered subjects are this registry's alone.
                let found = match version {
                    None => registered.len(),
                    Some(v) => usize::try_from(v).unwrap_or(0),
                };
                return match registered.get(found.wrapping_sub(1)) {
                    Some((text, id)) => {
                        let mut answer = schema_json(text, Some(*id));
                        answer["subject"] = json!(subject);
                        answer["version"] = json!(found);
                        (200, answer.to_string())
                    }
                    None => error(404, 40402, "Version not found"),
                };
            }
            match state.dir.by_subject(&subject, version) {
                Ok(Some((id, found, text))) => {
                    let mut answer = schema_json(&text, Some(id));
                    answer["subject"] = json!(subject);
                    answer["version"] = json!(found);
                    (200, answer.to_string())
                }
                Ok(None) => error(
                    404,
                    40402,
                    &format!("Version not found for subject '{subject}'"),
                ),
                Err(e) => error(500, 50001, &e.to_string()),
            }
        }
        _ => error(404, 404, "HTTP 404 Not Found"),
    }
}

/// Registers the schema of `body` under `subject`: the ID the registry
/// has for the same schema (in its directory or registered), else a new
/// one.
fn register(state: &State, subject: &str, body: &[u8]) -> (u16, String) {
    if state.refuse.load(Ordering::Acquire) {
        return error(
            409,
            40901,
            "Schema being registered is incompatible with an earlier schema for subject",
        );
    }
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return error(422, 42201, "Invalid schema: the request is not JSON");
    };
    let Some(text) = request["schema"].as_str() else {
        return error(422, 42201, "Invalid schema: no schema");
    };
    let format = match request["schemaType"].as_str() {
        None | Some("AVRO") => Format::Avro,
        Some("PROTOBUF") => Format::Protobuf,
        Some("JSON") => Format::Json,
        Some(other) => return error(422, 42202, &format!("Invalid schema type {other}")),
    };
    let schema = SchemaText {
        format,
        text: text.to_owned(),
        references: Vec::new(),
    };
    let mut registered = lock(&state.registered);
    let known = registered
        .iter()
        .find(|(_, known, _)| *known == schema)
        .map(|(_, _, id)| *id)
        .or_else(|| {
            let files = std::fs::read_dir(state.dir.path()).ok()?;
            files
                .filter_map(|file| {
                    let name = file.ok()?.file_name().into_string().ok()?;
                    name.split('.').next()?.parse::<u32>().ok()
                })
                .find(|id| {
                    state
                        .dir
                        .by_id(*id)
                        .ok()
                        .flatten()
                        .is_some_and(|known| known == schema)
                })
        });
    let id = known.unwrap_or_else(|| {
        let next = registered.iter().map(|(_, _, id)| *id).max();
        next.map_or(FIRST_REGISTERED_ID, |id| {
            id.max(FIRST_REGISTERED_ID - 1) + 1
        })
    });
    if !registered
        .iter()
        .any(|(s, known, _)| s == subject && *known == schema)
    {
        registered.push((subject.to_owned(), schema, id));
    }
    (200, json!({ "id": id }).to_string())
}

fn schema_json(text: &SchemaText, id: Option<u32>) -> Value {
    let mut answer = json!({
        "schema": text.text,
        "references": text.references,
    });
    // A registry leaves schemaType out for Avro.
    match text.format {
        Format::Avro => {}
        Format::Protobuf => answer["schemaType"] = json!("PROTOBUF"),
        Format::Json => answer["schemaType"] = json!("JSON"),
    }
    if let Some(id) = id {
        answer["id"] = json!(id);
    }
    answer
}

/// A percent-decoded path segment.
fn decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = segment.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
