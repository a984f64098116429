//! Calls into the router. Natively (in a plugin's unit tests) they are
//! served by [`testing`] instead.

#[cfg(target_arch = "wasm32")]
pub(crate) use imp::{given_index, set_call_partitions};

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Very detailed diagnostics.
    Trace,
    /// Diagnostics.
    Debug,
    /// Normal operation worth noting.
    Info,
    /// Something unexpected that the plugin handled.
    Warn,
    /// Something failed.
    Error,
}

/// Writes `message` to the router's log, tagged with the plugin's name.
///
/// Natively it goes to standard error.
pub fn log(level: Level, message: &str) {
    imp::log(level, message);
}

/// The route's default target topic: where an [`Output`](crate::Output)
/// without a topic goes.
///
/// Natively the answer comes from [`testing::set_default_target`] (`output`
/// unless set).
#[must_use]
pub fn default_target() -> String {
    imp::default_target()
}

/// The number of partitions of `topic`, if the router knows it and the route
/// may write to it.
///
/// Natively the answer comes from [`testing::set_partition_count`].
#[must_use]
pub fn partition_count(topic: &str) -> Option<u32> {
    imp::partition_count(topic)
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use std::cell::{Cell, OnceCell, RefCell};

    use super::Level;
    use crate::__private::bindings::switchyard::plugin::host::{self, Level as Wit};

    /// Header names this instance asked the router to hand over with every
    /// call, with their index in the call's context. Bounded: a plugin
    /// reading many different names fetches the rest one by one.
    const MAX_GIVEN: usize = 8;

    thread_local! {
        static TARGET: OnceCell<String> = const { OnceCell::new() };
        static GIVEN: RefCell<Vec<(String, usize)>> = const { RefCell::new(Vec::new()) };
        /// The default target's partition count handed over with the
        /// current call (0: not handed over).
        static PARTITIONS: Cell<u32> = const { Cell::new(0) };
    }

    pub(super) fn log(level: Level, message: &str) {
        let level = match level {
            Level::Trace => Wit::Trace,
            Level::Debug => Wit::Debug,
            Level::Info => Wit::Info,
            Level::Warn => Wit::Warn,
            Level::Error => Wit::Error,
        };
        host::log(level, message);
    }

    pub(super) fn partition_count(topic: &str) -> Option<u32> {
        let given = PARTITIONS.get();
        if given > 0 && TARGET.with(|t| t.get().is_some_and(|t| t == topic)) {
            return Some(given);
        }
        // Asking for the default target's makes the router hand it over
        // with the next calls.
        host::partition_count(topic)
    }

    pub(super) fn default_target() -> String {
        // Constant for the life of an instance: ask the router once.
        TARGET.with(|t| t.get_or_init(host::default_target).clone())
    }

    /// Where the router hands `key` over in the call's context; asks for
    /// it (from the next call on) the first time.
    pub(crate) fn given_index(key: &str) -> Option<usize> {
        GIVEN.with(|given| {
            let mut given = given.borrow_mut();
            if let Some((_, index)) = given.iter().find(|(k, _)| k == key) {
                return Some(*index);
            }
            if given.len() < MAX_GIVEN {
                let index = usize::try_from(host::want_header(key)).unwrap_or(usize::MAX);
                given.push((key.to_owned(), index));
            }
            // Not in this call's context yet.
            None
        })
    }

    /// Called at the start of every `route` call.
    pub(crate) fn set_call_partitions(count: u32) {
        PARTITIONS.set(count);
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::Level;

    pub(super) fn log(level: Level, message: &str) {
        eprintln!("[{level:?}] {message}");
    }

    pub(super) fn partition_count(topic: &str) -> Option<u32> {
        super::testing::PARTITIONS.with(|p| p.borrow().get(topic).copied())
    }

    pub(super) fn default_target() -> String {
        super::testing::DEFAULT_TARGET.with(|t| t.borrow().clone())
    }
}

/// Stand-ins for the router when plugin code runs natively, in tests.
pub mod testing {
    #[cfg(not(target_arch = "wasm32"))]
    thread_local! {
        pub(super) static PARTITIONS: std::cell::RefCell<std::collections::HashMap<String, u32>> =
            std::cell::RefCell::default();
        pub(super) static DEFAULT_TARGET: std::cell::RefCell<String> =
            std::cell::RefCell::new("output".to_owned());
    }

    /// Makes [`partition_count`](crate::partition_count) answer `count` for
    /// `topic` on this thread (native builds only; each test runs on its
    /// own thread).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn set_partition_count(topic: &str, count: u32) {
        PARTITIONS.with(|p| p.borrow_mut().insert(topic.to_owned(), count));
    }

    #[cfg(all(not(target_arch = "wasm32"), feature = "json"))]
    thread_local! {
        static SUBJECTS: std::cell::RefCell<std::collections::HashMap<String, u32>> =
            std::cell::RefCell::default();
    }

    /// Makes [`encode`](crate::encode) with
    /// [`SchemaRef::Subject`](crate::SchemaRef::Subject)`(subject)` (or
    /// [`SchemaRef::Register`](crate::SchemaRef::Register) under `subject`)
    /// write with schema `id` on this thread (native builds only).
    #[cfg(all(not(target_arch = "wasm32"), feature = "json"))]
    pub fn set_subject_id(subject: &str, id: u32) {
        SUBJECTS.with(|s| s.borrow_mut().insert(subject.to_owned(), id));
    }

    #[cfg(all(not(target_arch = "wasm32"), feature = "json"))]
    pub(crate) fn subject_id(subject: &str) -> Option<u32> {
        SUBJECTS.with(|s| s.borrow().get(subject).copied())
    }

    /// Makes [`default_target`](crate::default_target) answer `topic` on
    /// this thread (native builds only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn set_default_target(topic: &str) {
        DEFAULT_TARGET.with(|t| topic.clone_into(&mut t.borrow_mut()));
    }
}
