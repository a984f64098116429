//! Benchmark baseline, not an example: reads every field of the record and
//! returns copies of key, value and headers. That is what each record costs
//! under a contract that passes the whole record in and takes bytes back,
//! which the `batch` resource and `original` outputs avoid.
use switchyard_sdk::{Message, Output, RouteResult};

#[switchyard_sdk::route]
fn route(msg: &Message) -> RouteResult {
    let mut out = Output::new().headers(msg.headers().to_vec());
    if let Some(key) = msg.key() {
        out = out.key(key);
    }
    if let Some(value) = msg.value() {
        out = out.value(value);
    }
    let _ = (
        msg.topic(),
        msg.partition(),
        msg.offset(),
        msg.timestamp_ms(),
    );
    Ok(vec![out])
}
