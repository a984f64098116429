//! Why a plugin cannot be used: every error names the file and, where
//! there is one, the fix.

use std::path::PathBuf;

/// Why a plugin cannot be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The file could not be read.
    #[error("cannot read plugin '{path}': {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        error: std::io::Error,
    },
    /// The file is not WebAssembly at all.
    #[error("'{path}' is not a WebAssembly file (it does not start with the wasm magic bytes)")]
    NotWasm {
        /// The file.
        path: PathBuf,
    },
    /// A core module, not a component.
    #[error(
        "'{path}' is a core WebAssembly module, not a component: build the plugin for \
         the wasm32-wasip2 target (cargo build --target wasm32-wasip2)"
    )]
    CoreModule {
        /// The file.
        path: PathBuf,
    },
    /// Truncated, corrupt, or otherwise not compilable.
    #[error("'{path}' is not a valid component: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What the compiler said.
        reason: String,
    },
    /// A component, but not of the `router` world.
    #[error("'{path}' is not a Switchyard router plugin: {reason}")]
    WrongWorld {
        /// The file.
        path: PathBuf,
        /// What does not match.
        reason: String,
    },
    /// Instantiation failed (for example its start code trapped).
    #[error("plugin '{path}' failed to start: {reason}")]
    Instantiate {
        /// The file.
        path: PathBuf,
        /// The cause.
        reason: String,
    },
    /// `init` refused the configuration.
    #[error("plugin '{path}' refused its configuration: {reason}")]
    InitRefused {
        /// The file.
        path: PathBuf,
        /// The plugin's own message.
        reason: String,
    },
    /// `init` trapped or ran out of time or memory.
    #[error("plugin '{path}' failed in init: {reason}")]
    InitFailed {
        /// The file.
        path: PathBuf,
        /// The cause.
        reason: String,
    },
    /// Not a regular file (a folder, a FIFO, a device...).
    #[error("'{path}' is not a regular file ({kind}): a plugin is a .wasm file")]
    NotAFile {
        /// The file.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// Larger than the router accepts.
    #[error(
        "'{path}' is larger than {max} bytes, the most a plugin file may have \
         (SWITCHYARD_MAX_PLUGIN_MIB raises it)"
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        max: u64,
    },
    /// Compiling took longer than the router waits.
    #[error("'{path}' did not compile within {seconds} s (SWITCHYARD_COMPILE_TIMEOUT_S raises it)")]
    CompileTimeout {
        /// The file.
        path: PathBuf,
        /// The limit.
        seconds: u64,
    },
    /// The engine itself could not be set up.
    #[error("cannot set up the WebAssembly engine: {0}")]
    Engine(String),
}
