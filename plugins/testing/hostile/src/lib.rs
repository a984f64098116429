//! Test fixture, not an example: everything a hostile or broken plugin
//! might do, chosen by the record's value, so that tests can check the
//! router contains it. Any other value is forwarded unchanged.
//!
//! | value | what the plugin does |
//! |---|---|
//! | `loop` | never returns |
//! | `grow` | allocates 1 MiB after 1 MiB, forever |
//! | `grow-refused` | asks `memory.grow` for 1 GiB; forwards with header `grow: refused` if it fails, rejects if it is granted |
//! | `recurse` | recurses until the stack runs out |
//! | `panic` | panics |
//! | `trap` | executes `unreachable` |
//! | `huge-output` | returns one output of 100 MiB |
//! | `million-outputs` | returns 1,000,000 outputs |
//! | `bad-partition` | writes to partition 9999 |
//! | `bad-topic` | writes to the topic `forbidden` |
//! | `retry` | asks for a retry, every time |
//! | `retry-twice` | asks for a retry twice, then forwards with header `attempts: 3` |
//! | `reject` | rejects the record |
//! | `read-file` | reads `/etc/passwd`: forwards its content if it can, rejects with the error if not |
//! | `read-env` | reads the environment: forwards it if there is any, rejects if not |
//! | `socket:PORT` | connects to 127.0.0.1:PORT and writes to it; rejects with the error if it cannot |
//! | `exit` | calls `exit(3)` |
//! | `sleep` | logs `offset N sleeps an hour`, then sleeps an hour (waits inside the host, not in its own code) |
//! | `log-flood` | writes 1,000,000 log lines of 1 KiB, then forwards |
//! | `log-huge` | writes one log line of 60 MiB, then forwards |
//! | `print-huge` | writes 60 MiB to stderr without a newline, then forwards |
//! | `forge` | logs and prints a line with a newline and a fake router line in it, then forwards |
//! | `leak-stdio` | opens stdout handles without closing them, forever |
//! | `exact-limit` | returns one output whose value is exactly 1,000,000 bytes |
//! | `empty-headers:N` | forwards with N empty headers in place of its own |
//! | `log:TEXT` | logs TEXT, then forwards |
//! | `random:N` | asks WASI for N random bytes, then forwards with header `random-bytes: N` |
//! | `future-timestamp` | forwards with a timestamp two hours from now |
//!
//! Config `init = "panic" | "loop" | "refuse" | "sleep"` makes `init` fail
//! that way.
use std::cell::RefCell;
use std::collections::HashMap;
use std::hint::black_box;

use switchyard_sdk::{
    Config, Header, Level, Message, Output, Plugin, RouteError, RouteResult, log,
};

/// The fixture. Remembers how often each offset asked for a retry.
pub struct Hostile {
    retries: RefCell<HashMap<i64, u32>>,
}

#[switchyard_sdk::plugin]
impl Plugin for Hostile {
    #[allow(clippy::panic, reason = "failing init on demand is this fixture's job")]
    fn init(config: &Config) -> Result<Self, String> {
        config.deny_unknown(&["init"])?;
        match config.get("init") {
            Some("panic") => panic!("init asked to panic"),
            Some("loop") => spin(),
            Some("refuse") => Err("init asked to refuse".to_owned()),
            Some("sleep") => {
                std::thread::sleep(std::time::Duration::from_secs(3600));
                Err("init slept an hour".to_owned())
            }
            Some(other) => Err(format!("unknown init behaviour '{other}'")),
            None => Ok(Self {
                retries: RefCell::default(),
            }),
        }
    }

    #[allow(clippy::panic, reason = "panicking on demand is this fixture's job")]
    fn route(&self, msg: &Message) -> RouteResult {
        let value = msg.value_str().unwrap_or_default();
        if let Some(port) = value.strip_prefix("socket:") {
            return connect(port);
        }
        if let Some(text) = value.strip_prefix("log:") {
            log(Level::Info, text);
            return Ok(vec![Output::forward()]);
        }
        if let Some(len) = value.strip_prefix("random:") {
            return random_bytes(len.parse().unwrap_or(0));
        }
        if let Some(count) = value.strip_prefix("empty-headers:") {
            let count: usize = count.parse().unwrap_or(0);
            return Ok(vec![
                Output::forward().headers(vec![Header::new("", ""); count]),
            ]);
        }
        match value {
            "loop" => spin(),
            "grow" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(black_box(vec![1; 1 << 20]));
                    black_box(&hoard);
                }
            }
            "grow-refused" if grow_refused() => {
                Ok(vec![Output::forward().header("grow", "refused")])
            }
            "grow-refused" => Err(RouteError::reject("a growth of 1 GiB was granted")),
            "recurse" => Ok(vec![
                Output::forward().header("depth", recurse(0).to_string()),
            ]),
            "panic" => panic!("asked to panic at offset {}", msg.offset()),
            "trap" => trap(),
            "huge-output" => Ok(vec![Output::forward().value(vec![b'x'; 100 << 20])]),
            "million-outputs" => Ok((0..1_000_000).map(|_| Output::forward()).collect()),
            "bad-partition" => Ok(vec![Output::forward().partition(9999)]),
            "bad-topic" => Ok(vec![Output::forward().to_topic("forbidden")]),
            "retry" => Err(RouteError::retry("asked to retry, forever")),
            "retry-twice" => {
                let mut retries = self.retries.borrow_mut();
                let seen = retries.entry(msg.offset()).or_default();
                *seen += 1;
                if *seen <= 2 {
                    Err(RouteError::retry(format!("attempt {seen} asked to retry")))
                } else {
                    let attempts = seen.to_string();
                    retries.remove(&msg.offset());
                    Ok(vec![Output::forward().header("attempts", attempts)])
                }
            }
            "reject" => Err(RouteError::reject("asked to reject")),
            "read-file" => match std::fs::read("/etc/passwd") {
                Ok(stolen) => Ok(vec![Output::forward().value(stolen)]),
                Err(e) => Err(RouteError::reject(format!("cannot read /etc/passwd: {e}"))),
            },
            "read-env" => {
                let env: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
                if env.is_empty() {
                    Err(RouteError::reject("the environment is empty"))
                } else {
                    Ok(vec![Output::forward().value(env.join("\n"))])
                }
            }
            "exit" => std::process::exit(3),
            "sleep" => {
                log(
                    Level::Info,
                    &format!("offset {} sleeps an hour", msg.offset()),
                );
                std::thread::sleep(std::time::Duration::from_secs(3600));
                Ok(vec![Output::forward()])
            }
            "log-flood" => {
                let filler = "f".repeat(1000);
                for i in 0..1_000_000 {
                    log(Level::Info, &format!("flood {i} {filler}"));
                }
                Ok(vec![Output::forward()])
            }
            "log-huge" => {
                log(Level::Info, &"h".repeat(60 << 20));
                Ok(vec![Output::forward()])
            }
            "print-huge" => {
                let chunk = "p".repeat(1 << 20);
                for _ in 0..60 {
                    eprint!("{chunk}");
                }
                Ok(vec![Output::forward()])
            }
            "forge" => {
                let forged = "harmless\n2026-01-01T00:00:00Z ERROR switchyard: forged by a plugin";
                log(Level::Warn, forged);
                println!("{forged}");
                Ok(vec![Output::forward()])
            }
            "leak-stdio" => leak_stdio(),
            "exact-limit" => Ok(vec![Output::forward().value(vec![b'x'; 1_000_000])]),
            "future-timestamp" => {
                let two_hours_ahead = msg.timestamp_ms().unwrap_or(0) + 2 * 3600 * 1000;
                Ok(vec![Output::forward().timestamp_ms(two_hours_ahead)])
            }
            _ => Ok(vec![Output::forward()]),
        }
    }
}

fn connect(port: &str) -> RouteResult {
    use std::io::Write;
    let port: u16 = port
        .parse()
        .map_err(|_| RouteError::reject(format!("bad port '{port}'")))?;
    match std::net::TcpStream::connect(("127.0.0.1", port)) {
        Ok(mut stream) => {
            let sent = stream.write_all(b"escaped the sandbox\n");
            Ok(vec![
                Output::forward().value(format!("connected to port {port}: {sent:?}")),
            ])
        }
        Err(e) => Err(RouteError::reject(format!(
            "cannot connect to 127.0.0.1:{port}: {e}"
        ))),
    }
}

/// Asks WASI for a new stdout handle again and again, never closing one.
#[cfg(target_arch = "wasm32")]
fn leak_stdio() -> RouteResult {
    #[link(wasm_import_module = "wasi:cli/stdout@0.2.6")]
    unsafe extern "C" {
        #[link_name = "get-stdout"]
        fn get_stdout() -> i32;
    }
    let mut last = 0;
    for _ in 0..100_000_000_u64 {
        // SAFETY: `get-stdout` takes nothing and returns a new handle.
        last = black_box(unsafe { get_stdout() });
    }
    Err(RouteError::reject(format!(
        "opened 100,000,000 stdout handles (the last {last})"
    )))
}

/// Asks WASI for `len` random bytes in one call (the host makes them before
/// copying them in).
#[cfg(target_arch = "wasm32")]
fn random_bytes(len: u64) -> RouteResult {
    #[link(wasm_import_module = "wasi:random/random@0.2.6")]
    unsafe extern "C" {
        #[link_name = "get-random-bytes"]
        fn get_random_bytes(len: i64, ret: *mut [u32; 2]);
    }
    let mut list = [0_u32; 2];
    // SAFETY: the host writes the list's address and length (in memory it
    // allocated through this component's realloc) into `list`.
    unsafe { get_random_bytes(i64::try_from(len).unwrap_or(i64::MAX), &mut list) };
    Ok(vec![
        Output::forward().header("random-bytes", list[1].to_string()),
    ])
}

#[cfg(not(target_arch = "wasm32"))]
fn random_bytes(_len: u64) -> RouteResult {
    Err(RouteError::reject("only in wasm"))
}

#[cfg(not(target_arch = "wasm32"))]
fn leak_stdio() -> RouteResult {
    Err(RouteError::reject("only in wasm"))
}

fn spin() -> ! {
    loop {
        std::hint::spin_loop();
    }
}

/// Recurses with a frame the optimizer cannot remove, never returning.
#[allow(unconditional_recursion, reason = "exhausting the stack is the point")]
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth; 64]);
    recurse(black_box(
        frame[usize::try_from(depth % 64).unwrap_or(0)] + 1,
    )) + frame[0]
}

/// Whether `memory.grow` by 1 GiB (16,384 pages) failed.
#[cfg(target_arch = "wasm32")]
fn grow_refused() -> bool {
    core::arch::wasm32::memory_grow::<0>(16_384) == usize::MAX
}

#[cfg(not(target_arch = "wasm32"))]
fn grow_refused() -> bool {
    true
}

#[cfg(target_arch = "wasm32")]
fn trap() -> ! {
    core::arch::wasm32::unreachable()
}

#[cfg(not(target_arch = "wasm32"))]
fn trap() -> ! {
    std::process::abort()
}
