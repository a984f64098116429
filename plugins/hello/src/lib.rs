//! Hello world: forwards every record unchanged to the route's default
//! target.
use switchyard_sdk::{Message, Output, RouteResult};

#[switchyard_sdk::route]
fn route(_msg: &Message) -> RouteResult {
    Ok(vec![Output::forward()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_the_record_unchanged() {
        let msg = Message::builder().key("k").value("v").build();
        assert_eq!(route(&msg), Ok(vec![Output::forward()]));
    }
}
