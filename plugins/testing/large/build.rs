//! Writes the fixture's 4 MiB lookup table (deterministic xorshift bytes).
fn main() {
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    let mut table = vec![0u8; 4 << 20];
    let mut x: u32 = 0x9e37_79b9;
    for byte in &mut table {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *byte = x as u8;
    }
    if let Err(e) = std::fs::write(out.join("table.bin"), table) {
        eprintln!("cannot write the table: {e}");
        std::process::exit(1);
    }
    println!("cargo:rerun-if-changed=build.rs");
}
