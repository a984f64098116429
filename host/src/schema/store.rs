//! Schemas by ID for the record path: compiled once per process (an ID's
//! schema never changes), looked up without blocking, fetched off the
//! workers — once per ID however many records wait on it — from the
//! schema directory first, then the registry.
//!
//! A worker that meets an ID not yet here gets [`Lookup::Pending`] and
//! waits ([`SchemaStore::wait`]) while a task fetches it: a registry that
//! is down is asked again with backoff (100 ms doubling to 30 s) for as
//! long as it takes, and nothing is failed for it. An ID the sources say
//! they do not have, or whose schema does not compile, is
//! [`Lookup::Failed`]: its records fail (kind `schema`). A "not found" is
//! remembered for [`NOT_FOUND_TTL`] only, for a schema registered just
//! after a record that uses it was read.

use std::collections::{HashMap, HashSet};
use std::future::Future as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::dir::{DirError, SchemaDir};
use super::registry::{FetchError, Registry};
use super::{Compiled, Format, Reference, Resolved, SchemaText};

/// How long an ID the sources do not have stays "not found" before it is
/// asked for again.
pub const NOT_FOUND_TTL: Duration = Duration::from_secs(30);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Schema IDs and subjects the store keeps at most (far more than a
/// cluster's topics use): past them, a new one fails at once.
pub const MAX_SCHEMAS: usize = 10_000;
/// See [`MAX_SCHEMAS`].
pub const MAX_SUBJECTS: usize = 1_000;
/// References nest at most this deep.
const MAX_REFERENCE_DEPTH: usize = 32;
/// Distinct schemas plugins may ask to register, at most (per process).
pub const MAX_REGISTRATIONS: usize = 256;
/// The longest schema text a plugin may ask to register.
pub const MAX_REGISTERED_TEXT: usize = 256 << 10;

/// An ID's schema, as far as the store knows now.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// Compiled and ready.
    Ready(Arc<Compiled>),
    /// Its records cannot be read: why.
    Failed(Arc<str>),
    /// Being fetched: wait, then look again. Why it is not here yet, if a
    /// request failed.
    Pending(Option<Arc<str>>),
}

/// The latest schema of a subject, as far as the store knows now.
#[derive(Debug, Clone)]
pub enum SubjectLookup {
    /// Its ID (possibly older than the TTL while a refresh is on its way).
    Ready(u32),
    /// The sources have no such subject: why.
    Failed(Arc<str>),
    /// Being fetched; why it is not here yet, if a request failed.
    Pending(Option<Arc<str>>),
}

#[derive(Debug)]
struct SubjectSlot {
    /// The latest ID known, and when it was learnt.
    id: Option<(u32, Instant)>,
    /// A fetch is on its way.
    fetching: bool,
    /// Why the last fetch failed, and until when a "not found" holds.
    failed: Option<(Arc<str>, Option<Instant>)>,
}

/// A schema a plugin asked to register under a subject, and where its
/// registration stands.
#[derive(Debug)]
struct Registration {
    format: Format,
    text: Arc<str>,
    state: RegistrationState,
}

#[derive(Debug)]
enum RegistrationState {
    /// Being compiled, then registered; why the registry could not be
    /// asked yet, if it could not.
    Registering { last_error: Option<Arc<str>> },
    /// The ID the registry gave it (for good: the registry keeps it).
    Registered(u32),
    /// Why it was not registered, and until when that holds (`None`: for
    /// good).
    Failed {
        reason: Arc<str>,
        until: Option<Instant>,
    },
}

/// How long a subject's latest version is trusted before it is asked for
/// again (in the background: the known one is used meanwhile).
pub const DEFAULT_SUBJECT_TTL: Duration = Duration::from_secs(300);

#[derive(Debug)]
enum Slot {
    Ready(Arc<Compiled>),
    Failed {
        reason: Arc<str>,
        until: Option<Instant>,
    },
    Fetching {
        last_error: Option<Arc<str>>,
    },
}

/// What the store did, for metrics.
#[derive(Debug, Default)]
pub struct SchemaStats {
    /// Lookups answered from memory (ready or failed).
    pub hits: AtomicU64,
    /// Lookups that started a fetch.
    pub misses: AtomicU64,
    /// Registry requests answered with a schema.
    pub registry_ok: AtomicU64,
    /// Registry requests answered "not found".
    pub registry_not_found: AtomicU64,
    /// Registry requests that failed (no answer, an error, an unusable
    /// answer).
    pub registry_failed: AtomicU64,
    /// Schemas the registry refused to register.
    pub registry_refused: AtomicU64,
    /// Schemas that did not compile.
    pub invalid: AtomicU64,
}

/// Where schemas come from, and the ones already compiled.
#[derive(Debug)]
pub struct SchemaStore {
    dir: Option<SchemaDir>,
    registry: Option<Registry>,
    runtime: Option<tokio::runtime::Handle>,
    /// The runtime the registry is asked on, when the store has its own.
    _own_runtime: Option<OwnRuntime>,
    slots: Mutex<HashMap<u32, Slot>>,
    subjects: Mutex<HashMap<String, SubjectSlot>>,
    /// By subject (a plugin's schemas are looked up per record without
    /// copying their text).
    registrations: Mutex<HashMap<String, Vec<Registration>>>,
    subject_ttl: Duration,
    changed: Condvar,
    /// The registry's last failure, while it lasts (for `/ready`).
    registry_down: Mutex<Option<Arc<str>>>,
    stats: SchemaStats,
}

impl SchemaStore {
    /// A store reading `dir`, then `registry` (fetched on `runtime`; a
    /// store without a registry reads its directory in the caller).
    #[must_use]
    pub fn new(
        dir: Option<SchemaDir>,
        registry: Option<Registry>,
        runtime: Option<tokio::runtime::Handle>,
    ) -> Self {
        Self {
            dir,
            registry,
            runtime,
            _own_runtime: None,
            slots: Mutex::new(HashMap::new()),
            subjects: Mutex::new(HashMap::new()),
            registrations: Mutex::new(HashMap::new()),
            subject_ttl: DEFAULT_SUBJECT_TTL,
            changed: Condvar::new(),
            registry_down: Mutex::new(None),
            stats: SchemaStats::default(),
        }
    }

    /// A store reading `dir`, then `registry`, asked on a runtime of its
    /// own (one thread).
    ///
    /// # Errors
    /// When the runtime's thread cannot start.
    pub fn with_own_runtime(dir: Option<SchemaDir>, registry: Registry) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("switchyard-schemas")
            .enable_all()
            .build()?;
        let mut store = Self::new(dir, Some(registry), Some(runtime.handle().clone()));
        store._own_runtime = Some(OwnRuntime(Some(runtime)));
        Ok(store)
    }

    /// The store, trusting a subject's latest version for `ttl`.
    #[must_use]
    pub fn with_subject_ttl(mut self, ttl: Duration) -> Self {
        self.subject_ttl = ttl;
        self
    }

    /// The ID of the latest schema of `subject`, without blocking: known
    /// (refreshed in the background once older than the TTL), failed, or
    /// being fetched (a fetch starts on the first lookup).
    pub fn latest(self: &Arc<Self>, subject: &str) -> SubjectLookup {
        let now = Instant::now();
        let mut subjects = lock(&self.subjects);
        if subjects.len() >= MAX_SUBJECTS && !subjects.contains_key(subject) {
            // A plugin names subjects: it cannot make the store grow, or
            // the registry be asked, without bound.
            return SubjectLookup::Failed(
                format!("subject '{subject}': this router already knows {MAX_SUBJECTS} subjects, the most it keeps").into(),
            );
        }
        let slot = subjects.entry(subject.to_owned()).or_insert(SubjectSlot {
            id: None,
            fetching: false,
            failed: None,
        });
        let fresh = slot
            .id
            .is_some_and(|(_, at)| now.duration_since(at) < self.subject_ttl);
        let failed_for_now = slot
            .failed
            .as_ref()
            .is_some_and(|(_, until)| until.is_some_and(|t| now < t));
        if !fresh && !slot.fetching && !failed_for_now {
            match (&self.registry, &self.runtime) {
                (Some(_), Some(runtime)) => {
                    slot.fetching = true;
                    let (store, subject) = (self.clone(), subject.to_owned());
                    runtime.spawn(async move { store.fetch_subject(subject).await });
                }
                _ => {
                    // The directory alone: read here, at once.
                    let found = self.dir.as_ref().map(|dir| dir.by_subject(subject, None));
                    match found {
                        Some(Ok(Some((id, _, _)))) => {
                            slot.id = Some((id, now));
                            slot.failed = None;
                        }
                        Some(Err(e)) => {
                            slot.failed = Some((e.to_string().into(), Some(now + NOT_FOUND_TTL)))
                        }
                        Some(Ok(None)) | None => {
                            let reason = format!("subject '{subject}' is in no schema source");
                            slot.failed = Some((reason.into(), Some(now + NOT_FOUND_TTL)));
                        }
                    }
                }
            }
        }
        match (&slot.id, &slot.failed) {
            (Some((id, _)), _) => SubjectLookup::Ready(*id),
            (None, Some((reason, Some(_)))) if !slot.fetching => {
                SubjectLookup::Failed(reason.clone())
            }
            (None, failed) => SubjectLookup::Pending(failed.as_ref().map(|(r, _)| r.clone())),
        }
    }

    /// Fetches the latest version of `subject` until the sources answer.
    async fn fetch_subject(self: Arc<Self>, subject: String) {
        let mut delay = BACKOFF_MIN;
        loop {
            let answer = match self.dir.as_ref().map(|dir| dir.by_subject(&subject, None)) {
                Some(Ok(Some((id, _, _)))) => Ok(id),
                Some(Err(e)) => Err(dir_error(&e)),
                Some(Ok(None)) | None => match &self.registry {
                    Some(registry) => {
                        let answer = registry.by_subject(&subject, None).await;
                        self.count(&answer);
                        answer.map(|(id, _)| id)
                    }
                    None => Err(FetchError::NotFound(format!(
                        "subject '{subject}' is in no schema source"
                    ))),
                },
            };
            // Its schema is wanted next: fetched now.
            if let Ok(id) = &answer {
                let _ = self.lookup(*id);
            }
            // Settled under the lock; a wait happens after it is let go.
            let again = {
                let mut subjects = lock(&self.subjects);
                let Some(slot) = subjects.get_mut(&subject) else {
                    return;
                };
                let again = match answer {
                    Ok(id) => {
                        slot.id = Some((id, Instant::now()));
                        slot.failed = None;
                        false
                    }
                    Err(FetchError::NotFound(reason) | FetchError::Refused(reason)) => {
                        // A subject deleted since: the ID known stays usable.
                        slot.failed = Some((reason.into(), Some(Instant::now() + NOT_FOUND_TTL)));
                        false
                    }
                    Err(FetchError::Unavailable(reason)) => {
                        tracing::warn!(subject, error = %reason, retry_ms = delay.as_millis(), "schema registry unavailable: cannot fetch the subject's latest schema");
                        slot.failed = Some((reason.into(), None));
                        match &mut slot.id {
                            // With an ID known, it stays in use: asked for
                            // again a TTL from now rather than in a loop.
                            Some((_, at)) => {
                                *at = Instant::now();
                                false
                            }
                            None => true,
                        }
                    }
                };
                if !again {
                    slot.fetching = false;
                }
                again
            };
            if !again {
                return;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(BACKOFF_MAX);
        }
    }

    /// The ID of `text`, a schema of `format` registered under `subject`,
    /// without blocking: known (registered before by this process),
    /// failed, or being registered (the first call starts it: the schema
    /// is compiled here first, then registered, the registry asked again
    /// with backoff while it is down).
    pub fn register(self: &Arc<Self>, subject: &str, format: Format, text: &str) -> SubjectLookup {
        if text.len() > MAX_REGISTERED_TEXT {
            return SubjectLookup::Failed(
                format!(
                    "the schema to register under subject '{subject}' is {} bytes long, over the {MAX_REGISTERED_TEXT} allowed",
                    text.len()
                )
                .into(),
            );
        }
        let (Some(registry), Some(runtime)) = (&self.registry, &self.runtime) else {
            return SubjectLookup::Failed(
                format!("cannot register a schema under subject '{subject}': the router has no schema registry ([schemas.registry])").into(),
            );
        };
        let mut registrations = lock(&self.registrations);
        let known = registrations.get_mut(subject).and_then(|of| {
            of.iter_mut()
                .find(|r| r.format == format && *r.text == *text)
        });
        let text: Arc<str> = match known {
            Some(registration) => {
                match &registration.state {
                    RegistrationState::Registered(id) => return SubjectLookup::Ready(*id),
                    RegistrationState::Registering { last_error } => {
                        return SubjectLookup::Pending(last_error.clone());
                    }
                    RegistrationState::Failed { reason, until }
                        if until.is_none_or(|t| Instant::now() < t) =>
                    {
                        return SubjectLookup::Failed(reason.clone());
                    }
                    // Asked again once its failure expired.
                    RegistrationState::Failed { .. } => {}
                }
                registration.state = RegistrationState::Registering { last_error: None };
                registration.text.clone()
            }
            None => {
                if registrations.values().map(Vec::len).sum::<usize>() >= MAX_REGISTRATIONS {
                    return SubjectLookup::Failed(
                        format!("cannot register a schema under subject '{subject}': this router already registered {MAX_REGISTRATIONS} schemas, the most it keeps").into(),
                    );
                }
                let text: Arc<str> = text.into();
                registrations
                    .entry(subject.to_owned())
                    .or_default()
                    .push(Registration {
                        format,
                        text: text.clone(),
                        state: RegistrationState::Registering { last_error: None },
                    });
                text
            }
        };
        let task = (self.clone(), registry.clone(), subject.to_owned(), text);
        runtime.spawn(async move {
            let (store, registry, subject, text) = task;
            store
                .register_until_answered(registry, subject, format, text)
                .await;
        });
        SubjectLookup::Pending(None)
    }

    /// Sets the state of the registration of `text` under `subject`.
    fn settle(&self, subject: &str, format: Format, text: &str, state: RegistrationState) {
        if let Some(registration) = lock(&self.registrations).get_mut(subject).and_then(|of| {
            of.iter_mut()
                .find(|r| r.format == format && *r.text == *text)
        }) {
            registration.state = state;
        }
    }

    /// Compiles, then registers, `text` under `subject` until the registry
    /// answers.
    async fn register_until_answered(
        self: Arc<Self>,
        registry: Registry,
        subject: String,
        format: Format,
        text: Arc<str>,
    ) {
        let schema = SchemaText {
            format,
            text: text.to_string(),
            references: Vec::new(),
        };
        let compiling = Resolved {
            schema: schema.clone(),
            references: Vec::new(),
        };
        let compiled =
            tokio::task::spawn_blocking(move || Compiled::compile(0, &compiling).map(drop)).await;
        let compile_error = match compiled {
            Ok(Ok(())) => None,
            Ok(Err(reason)) => Some(reason),
            Err(e) => Some(format!("compiling it failed: {e}")),
        };
        if let Some(reason) = compile_error {
            // The same text never compiles: failed for good.
            let reason = format!(
                "the {} schema to register under subject '{subject}' does not compile: {reason}",
                format.name()
            );
            tracing::error!(subject, error = %reason, "schema not registered");
            let failed = RegistrationState::Failed {
                reason: reason.into(),
                until: None,
            };
            self.settle(&subject, format, &text, failed);
            return;
        }
        let mut delay = BACKOFF_MIN;
        loop {
            let answer = registry.register(&subject, &schema).await;
            self.count(&answer);
            let state = match answer {
                Ok(id) => {
                    tracing::info!(subject, schema_id = id, "schema registered");
                    // Its schema is wanted next: fetched now.
                    let _ = self.lookup(id);
                    RegistrationState::Registered(id)
                }
                Err(FetchError::Refused(reason) | FetchError::NotFound(reason)) => {
                    // The subject's compatibility rules may change: asked
                    // again after a while.
                    tracing::error!(subject, error = %reason, "schema not registered");
                    RegistrationState::Failed {
                        reason: reason.into(),
                        until: Some(Instant::now() + NOT_FOUND_TTL),
                    }
                }
                Err(FetchError::Unavailable(reason)) => {
                    tracing::warn!(subject, error = %reason, retry_ms = delay.as_millis(), "schema registry unavailable: cannot register the schema");
                    let reason: Arc<str> = reason.into();
                    *lock(&self.registry_down) = Some(reason.clone());
                    let waiting = RegistrationState::Registering {
                        last_error: Some(reason),
                    };
                    self.settle(&subject, format, &text, waiting);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            self.settle(&subject, format, &text, state);
            return;
        }
    }

    /// What the store did so far.
    #[must_use]
    pub fn stats(&self) -> &SchemaStats {
        &self.stats
    }

    /// The registry, if the store has one.
    #[must_use]
    pub fn registry(&self) -> Option<&Registry> {
        self.registry.as_ref()
    }

    /// Why the registry could not be used, while it cannot be.
    #[must_use]
    pub fn registry_down(&self) -> Option<Arc<str>> {
        lock(&self.registry_down).clone()
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<u32, Slot>> {
        lock(&self.slots)
    }

    /// Schema `id`, without blocking: ready, failed, or being fetched (a
    /// fetch starts on the first lookup).
    pub fn lookup(self: &Arc<Self>, id: u32) -> Lookup {
        let mut slots = self.slots();
        match slots.get(&id) {
            Some(Slot::Ready(schema)) => {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                return Lookup::Ready(schema.clone());
            }
            Some(Slot::Failed { reason, until }) if until.is_none_or(|t| Instant::now() < t) => {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                return Lookup::Failed(reason.clone());
            }
            Some(Slot::Fetching { last_error }) => return Lookup::Pending(last_error.clone()),
            Some(Slot::Failed { .. }) => {}
            None if slots.len() >= MAX_SCHEMAS => {
                // Records and plugins name IDs: neither can make the store
                // grow, or the registry be asked, without bound.
                return Lookup::Failed(
                    format!("schema {id}: this router already knows {MAX_SCHEMAS} schema IDs, the most it keeps").into(),
                );
            }
            None => {}
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        match (&self.registry, &self.runtime) {
            (Some(_), Some(runtime)) => {
                slots.insert(id, Slot::Fetching { last_error: None });
                drop(slots);
                let store = self.clone();
                runtime.spawn(async move { store.fetch(id).await });
                Lookup::Pending(None)
            }
            _ => {
                // The directory alone: read here, at once (nothing in
                // `resolve` waits then).
                drop(slots);
                let mut resolving = std::pin::pin!(self.resolve(id));
                let resolved = match resolving
                    .as_mut()
                    .poll(&mut Context::from_waker(Waker::noop()))
                {
                    Poll::Ready(resolved) => resolved,
                    Poll::Pending => Err(FetchError::Unavailable(format!(
                        "schema {id}: the schema directory cannot be read without waiting"
                    ))),
                };
                let slot = match resolved {
                    Ok(resolved) => self.compiled(id, &resolved),
                    Err(
                        FetchError::NotFound(reason)
                        | FetchError::Unavailable(reason)
                        | FetchError::Refused(reason),
                    ) => Slot::Failed {
                        reason: reason.into(),
                        until: Some(Instant::now() + NOT_FOUND_TTL),
                    },
                };
                let lookup = match &slot {
                    Slot::Ready(schema) => Lookup::Ready(schema.clone()),
                    Slot::Failed { reason, .. } => Lookup::Failed(reason.clone()),
                    Slot::Fetching { last_error } => Lookup::Pending(last_error.clone()),
                };
                self.slots().insert(id, slot);
                lookup
            }
        }
    }

    /// Blocks until schema `id` is no longer being fetched, or `max`
    /// passed.
    pub fn wait(&self, id: u32, max: Duration) {
        let slots = self.slots();
        let _ = self
            .changed
            .wait_timeout_while(slots, max, |slots| {
                matches!(slots.get(&id), Some(Slot::Fetching { .. }))
            })
            .unwrap_or_else(PoisonError::into_inner);
    }

    /// Fetches schema `id` until the sources give an answer about it.
    async fn fetch(self: Arc<Self>, id: u32) {
        let mut delay = BACKOFF_MIN;
        loop {
            let slot = match self.resolve(id).await {
                Ok(resolved) => {
                    let store = self.clone();
                    // Compiling (.proto especially) is work: off the runtime's threads.
                    match tokio::task::spawn_blocking(move || store.compiled(id, &resolved)).await {
                        Ok(slot) => slot,
                        Err(e) => Slot::Failed {
                            reason: format!("schema {id}: compiling it failed: {e}").into(),
                            until: Some(Instant::now() + NOT_FOUND_TTL),
                        },
                    }
                }
                Err(FetchError::NotFound(reason) | FetchError::Refused(reason)) => Slot::Failed {
                    reason: reason.into(),
                    until: Some(Instant::now() + NOT_FOUND_TTL),
                },
                Err(FetchError::Unavailable(reason)) => {
                    let reason: Arc<str> = reason.into();
                    tracing::warn!(
                        schema_id = id,
                        error = %reason,
                        retry_ms = delay.as_millis(),
                        "schema registry unavailable: records with this schema wait"
                    );
                    *lock(&self.registry_down) = Some(reason.clone());
                    self.slots().insert(
                        id,
                        Slot::Fetching {
                            last_error: Some(reason),
                        },
                    );
                    self.changed.notify_all();
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            self.slots().insert(id, slot);
            self.changed.notify_all();
            return;
        }
    }

    /// Compiles `resolved`: the slot schema `id` gets.
    fn compiled(&self, id: u32, resolved: &Resolved) -> Slot {
        match Compiled::compile(id, resolved) {
            Ok(schema) => {
                tracing::info!(
                    schema_id = id,
                    format = schema.format().name(),
                    "schema loaded"
                );
                Slot::Ready(Arc::new(schema))
            }
            Err(reason) => {
                self.stats.invalid.fetch_add(1, Ordering::Relaxed);
                let reason = format!(
                    "schema {id} ({}) does not compile: {reason}",
                    resolved.schema.format.name()
                );
                tracing::error!(schema_id = id, error = %reason, "unusable schema: its records fail");
                // An ID's schema never changes: neither does this.
                Slot::Failed {
                    reason: reason.into(),
                    until: None,
                }
            }
        }
    }

    /// Schema `id` and its references, from the directory, then the
    /// registry.
    async fn resolve(&self, id: u32) -> Result<Resolved, FetchError> {
        let schema = self.by_id(id).await?;
        let mut references = Vec::new();
        let mut seen = HashSet::new();
        let mut stack: Vec<(Reference, usize)> =
            schema.references.iter().cloned().map(|r| (r, 1)).collect();
        let mut found: Vec<(Reference, SchemaText, usize)> = Vec::new();
        while let Some((reference, depth)) = stack.pop() {
            if depth > MAX_REFERENCE_DEPTH {
                return Err(FetchError::NotFound(format!(
                    "schema {id}: references nest more than {MAX_REFERENCE_DEPTH} deep"
                )));
            }
            if !seen.insert((reference.subject.clone(), reference.version)) {
                continue;
            }
            let text = self
                .by_subject(&reference.subject, reference.version)
                .await
                .map_err(|e| match e {
                    FetchError::NotFound(reason) => FetchError::NotFound(format!(
                        "schema {id} references '{}': {reason}",
                        reference.name
                    )),
                    other => other,
                })?;
            stack.extend(text.references.iter().cloned().map(|r| (r, depth + 1)));
            found.push((reference, text, depth));
        }
        found.sort_by_key(|(_, _, depth)| std::cmp::Reverse(*depth));
        references.extend(found.into_iter().map(|(r, t, _)| (r, t)));
        Ok(Resolved { schema, references })
    }

    async fn by_id(&self, id: u32) -> Result<SchemaText, FetchError> {
        if let Some(dir) = &self.dir {
            match dir.by_id(id) {
                Ok(Some(text)) => return Ok(text),
                Ok(None) => {}
                Err(e) => return Err(dir_error(&e)),
            }
        }
        let Some(registry) = &self.registry else {
            return Err(FetchError::NotFound(format!(
                "schema {id} is in no schema source"
            )));
        };
        let answer = registry.by_id(id).await;
        self.count(&answer);
        answer
    }

    async fn by_subject(&self, subject: &str, version: i32) -> Result<SchemaText, FetchError> {
        if let Some(dir) = &self.dir {
            match dir.by_subject(subject, Some(version)) {
                Ok(Some((_, _, text))) => return Ok(text),
                Ok(None) => {}
                Err(e) => return Err(dir_error(&e)),
            }
        }
        let Some(registry) = &self.registry else {
            return Err(FetchError::NotFound(format!(
                "version {version} of subject '{subject}' is in no schema source"
            )));
        };
        let answer = registry
            .by_subject(subject, Some(version))
            .await
            .map(|(_, text)| text);
        self.count(&answer);
        answer
    }

    fn count<T>(&self, answer: &Result<T, FetchError>) {
        let counter = match answer {
            Ok(_) => &self.stats.registry_ok,
            Err(FetchError::NotFound(_)) => &self.stats.registry_not_found,
            Err(FetchError::Unavailable(_)) => &self.stats.registry_failed,
            Err(FetchError::Refused(_)) => &self.stats.registry_refused,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if !matches!(answer, Err(FetchError::Unavailable(_))) {
            *lock(&self.registry_down) = None;
        }
    }
}

/// A runtime that is let go without waiting for its tasks (a fetch that
/// waits out a registry outage) when the store goes, whatever thread that
/// is on.
#[derive(Debug)]
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// A directory file that cannot be used: a fact about that schema until
/// the file is fixed.
fn dir_error(e: &DirError) -> FetchError {
    FetchError::NotFound(e.to_string())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
