//! Building this crate has an undeclared dependency on the `bpf-linker` binary: rebuild when it
//! changes (e.g. `cargo xtask setup` installed a new one). Never fails: where bpf-linker is
//! missing (a host `cargo clippy --workspace`, say) there is nothing to track.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if let Ok(bpf_linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", bpf_linker.display());
    }
}
