//! Test fixture, not an example: misbehaves on demand so that tests can
//! watch the router cope. The record value picks the behaviour:
//!
//! - `panic`: panics (a trap with a message on stderr);
//! - `trap`: executes `unreachable`;
//! - `loop`: never returns;
//! - `retry` / `reject`: fails with that disposition;
//! - `bad-topic`: writes to the topic `forbidden`;
//! - `bad-partition`: writes to partition 9999;
//! - `log`: logs through the host, stdout and stderr, then forwards;
//! - anything else: forwards the record unchanged.
//!
//! Config `refuse = "reason"` makes `init` refuse with that reason.
use switchyard_sdk::{Config, Level, Message, Output, Plugin, RouteError, RouteResult, log};

/// The fixture.
pub struct Misbehave;

#[switchyard_sdk::plugin]
impl Plugin for Misbehave {
    fn init(config: &Config) -> Result<Self, String> {
        config.deny_unknown(&["refuse"])?;
        match config.get("refuse") {
            Some(reason) => Err(reason.to_owned()),
            None => Ok(Self),
        }
    }

    #[allow(clippy::panic, reason = "panicking on demand is this fixture's job")]
    fn route(&self, msg: &Message) -> RouteResult {
        match msg.value_str().unwrap_or_default() {
            "panic" => panic!("asked to panic at offset {}", msg.offset()),
            "trap" => trap(),
            "loop" => loop {
                std::hint::spin_loop();
            },
            "retry" => Err(RouteError::retry("asked to retry")),
            "reject" => Err(RouteError::reject("asked to reject")),
            "bad-topic" => Ok(vec![Output::forward().to_topic("forbidden")]),
            "bad-partition" => Ok(vec![Output::forward().partition(9999)]),
            "log" => {
                log(Level::Warn, "log line from the plugin");
                println!("stdout line from the plugin");
                eprintln!("stderr line from the plugin");
                Ok(vec![Output::forward()])
            }
            _ => Ok(vec![Output::forward()]),
        }
    }
}

#[cfg(target_arch = "wasm32")]
fn trap() -> ! {
    core::arch::wasm32::unreachable()
}

#[cfg(not(target_arch = "wasm32"))]
fn trap() -> ! {
    std::process::abort()
}
