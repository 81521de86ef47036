//! The eBPF object (enforcer-ebpf's TC programs), embedded at build time.
//!
//! `build.rs` compiles `enforcer-ebpf` for the bpf target and leaves the object at
//! `$OUT_DIR/enforcer-ebpf`. On machines without bpf-linker or a nightly with rust-src it leaves
//! an empty stub there instead (and sets `cfg(enforcer_ebpf_stub)`), so everything else still
//! builds; [`object`] then returns [`EbpfObjectError::NotBuilt`].

//! Program and map names are the contract in `enforcer_common::{programs, maps}`.

#[derive(Debug, thiserror::Error)]
pub enum EbpfObjectError {
    #[error(
        "this enforcer binary was built without its eBPF object (bpf-linker or nightly rust-src \
         were missing at build time); run `cargo xtask setup` and rebuild"
    )]
    NotBuilt,
}

/// Whether this binary was built with the empty stub instead of the real object.
pub const fn is_stub() -> bool {
    cfg!(enforcer_ebpf_stub)
}

/// The embedded ELF object, 8-byte aligned as `aya::Ebpf::load` wants it.
pub fn object() -> Result<&'static [u8], EbpfObjectError> {
    let bytes: &'static [u8] =
        aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/enforcer-ebpf"));
    if is_stub() || bytes.is_empty() {
        return Err(EbpfObjectError::NotBuilt);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_object_error_tells_the_operator_what_to_do() {
        let msg = EbpfObjectError::NotBuilt.to_string();
        assert!(msg.contains("cargo xtask setup"), "{msg}");
    }

    /// The object embedded in this build holds both contract programs and every contract
    /// map (loading and running them is covered by `tests/datapath_testrun.rs`).
    #[test]
    fn embedded_object_has_the_contract_programs_and_maps() {
        let bytes = match object() {
            Ok(b) => b,
            Err(e) => panic!("{e}"),
        };
        let has = |name: &str| bytes.windows(name.len()).any(|w| w == name.as_bytes());
        for name in [
            enforcer_common::programs::FROM_ENDPOINT,
            enforcer_common::programs::TO_ENDPOINT,
            enforcer_common::maps::CONFIG,
            enforcer_common::maps::ENDPOINTS,
            enforcer_common::maps::PEER_V4,
            enforcer_common::maps::PEER_V6,
            enforcer_common::maps::PORTS,
            enforcer_common::maps::VERDICTS,
            enforcer_common::maps::CONNTRACK,
            enforcer_common::maps::VERDICT_COUNTERS,
            enforcer_common::maps::RULE_COUNTERS,
            enforcer_common::maps::STAGED_COUNTERS,
            enforcer_common::maps::EVENTS,
            enforcer_common::maps::EVENT_LIMIT,
        ] {
            assert!(has(name), "the embedded eBPF object has no {name}");
        }
    }
}
