//! Calls into the router. Natively (in a plugin's unit tests) they are
//! served by [`testing`] instead.

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
    use super::Level;
    use crate::__private::bindings::switchyard::plugin::host::{self, Level as Wit};

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
        host::partition_count(topic)
    }

    pub(super) fn default_target() -> String {
        // Constant for the life of an instance: ask the router once.
        thread_local! {
            static TARGET: std::cell::OnceCell<String> = const { std::cell::OnceCell::new() };
        }
        TARGET.with(|t| t.get_or_init(host::default_target).clone())
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

    /// Makes [`default_target`](crate::default_target) answer `topic` on
    /// this thread (native builds only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn set_default_target(topic: &str) {
        DEFAULT_TARGET.with(|t| topic.clone_into(&mut t.borrow_mut()));
    }
}
