//! Hello world: forwards every record unchanged to the route's default
//! target.
use switchyard_sdk::{Message, Output, RouteResult};

#[switchyard_sdk::route]
fn route(_msg: &Message) -> RouteResult {
    Ok(vec![Output::forward()])
}
