//! A route's records checked against their schemas before its plugin
//! sees them (`value_format` / `key_format` = "schema-registry").

use std::sync::Arc;
use std::time::Duration;

use super::store::{Lookup, SchemaStore};
use super::wire;
use crate::record::SourceRecord;

/// Which of a route's records' parts are read by schema, and from where.
#[derive(Debug, Clone)]
pub struct RecordSchemas {
    store: Arc<SchemaStore>,
    key: bool,
    value: bool,
    register: bool,
}

/// What a record's check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Its framed parts match their schemas (or it has none).
    Ok,
    /// It cannot be read: why (the part, the schema ID, what is wrong).
    Failed(String),
    /// Schema `id` is being fetched; why it is not here yet, if a request
    /// failed.
    Pending {
        /// The schema waited for.
        id: u32,
        /// Why the last request for it failed.
        why: Option<Arc<str>>,
    },
}

impl RecordSchemas {
    /// Checks the keys (if `key`) and values (if `value`) of records
    /// against the schemas of `store`.
    #[must_use]
    pub fn new(store: Arc<SchemaStore>, key: bool, value: bool) -> Self {
        Self {
            store,
            key,
            value,
            register: false,
        }
    }

    /// These, with the route's plugin allowed to register new schemas
    /// (`register_schemas`) if `register`.
    #[must_use]
    pub fn registering(mut self, register: bool) -> Self {
        self.register = register;
        self
    }

    /// Whether the route's plugin may register new schemas.
    #[must_use]
    pub fn registers(&self) -> bool {
        self.register
    }

    /// Where the schemas come from.
    #[must_use]
    pub fn store(&self) -> &Arc<SchemaStore> {
        &self.store
    }

    /// Whether the values are read by schema.
    #[must_use]
    pub fn values(&self) -> bool {
        self.value
    }

    /// Whether the keys are read by schema.
    #[must_use]
    pub fn keys(&self) -> bool {
        self.key
    }

    /// Checks `record`'s framed parts (a null one is not checked: a
    /// tombstone has no schema).
    #[must_use]
    pub fn check(&self, record: &SourceRecord) -> Check {
        if !self.key && !self.value {
            return Check::Ok;
        }
        let parts = [
            ("key", self.key, &record.key),
            ("value", self.value, &record.value),
        ];
        for (part, framed, bytes) in parts {
            let (true, Some(bytes)) = (framed, bytes) else {
                continue;
            };
            let id = match wire::split(bytes) {
                Ok((id, _)) => id,
                Err(e) => return Check::Failed(format!("{part}: {e}")),
            };
            match self.store.lookup(id) {
                Lookup::Ready(schema) => {
                    if let Err(e) = schema.validate(bytes) {
                        return Check::Failed(format!("{part}: {e}"));
                    }
                }
                Lookup::Failed(reason) => return Check::Failed(format!("{part}: {reason}")),
                Lookup::Pending(why) => return Check::Pending { id, why },
            }
        }
        Check::Ok
    }

    /// Blocks until schema `id` is no longer being fetched, or `max`
    /// passed.
    pub fn wait(&self, id: u32, max: Duration) {
        self.store.wait(id, max);
    }
}
