//! Test fixture: a component of the `wasi:cli/command` world, which the
//! router must refuse with a precise reason.
fn main() {
    println!("I am not a router");
}
