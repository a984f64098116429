//! Test fixture, not an example: forwards every record with a
//! `plugin-tag` header. The tag lives in the data segment as
//! `switchyard-tag:` followed by 9 bytes that tests overwrite in the `.wasm`
//! file to make distinct versions of the same plugin. A tag starting with
//! `initfail` makes `init` refuse; the tag `initsleep` makes `init` sleep
//! an hour (it waits inside the host).
use switchyard_sdk::{Config, Message, Output, Plugin, RouteResult};

/// Patched by tests: keep the marker and the length.
static TAG: [u8; 24] = *b"switchyard-tag:v00000000";

fn tag() -> String {
    // Read through a black box so the bytes stay in the data segment.
    let bytes = std::hint::black_box(&TAG);
    String::from_utf8_lossy(&bytes[15..]).into_owned()
}

/// The fixture.
pub struct Versioned {
    tag: String,
}

#[switchyard_sdk::plugin]
impl Plugin for Versioned {
    fn init(config: &Config) -> Result<Self, String> {
        config.deny_unknown(&[])?;
        let tag = tag();
        if tag.starts_with("initfail") {
            return Err(format!("version {tag} refuses to start"));
        }
        if tag == "initsleep" {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
        Ok(Self { tag })
    }

    fn route(&self, _msg: &Message) -> RouteResult {
        Ok(vec![
            Output::forward().header("plugin-tag", self.tag.as_str()),
        ])
    }
}
