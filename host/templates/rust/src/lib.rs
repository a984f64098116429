//! {{name}}: a Switchyard routing plugin.
use switchyard_sdk::{Message, Output, RouteResult};

/// Forwards every record unchanged to the route's default target, and drops
/// tombstones (records with a null value).
#[switchyard_sdk::route]
fn route(msg: &Message) -> RouteResult {
    if msg.value().is_none() {
        return Ok(vec![]);
    }
    Ok(vec![Output::forward()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_forwarded_unchanged() {
        let msg = Message::builder().key("k").value("v").build();
        assert_eq!(route(&msg), Ok(vec![Output::forward()]));
    }

    #[test]
    fn a_tombstone_is_dropped() {
        let msg = Message::builder().key("k").build();
        assert_eq!(route(&msg), Ok(vec![]));
    }
}
