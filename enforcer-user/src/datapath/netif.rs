//! Interface names and indexes of the calling thread's network namespace.
//!
//! `if_nametoindex(3)`/`if_indextoname(3)` ask the kernel through a socket, so they answer for
//! the namespace of the calling *thread* (unlike `/sys/class/net`, which shows the namespace
//! sysfs was mounted in).

use std::ffi::{CStr, CString};

use super::error::DatapathError;

/// An interface, by index or by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interface {
    Index(u32),
    Name(String),
}

impl From<u32> for Interface {
    fn from(i: u32) -> Self {
        Interface::Index(i)
    }
}

impl From<&str> for Interface {
    fn from(n: &str) -> Self {
        Interface::Name(n.to_owned())
    }
}

impl From<String> for Interface {
    fn from(n: String) -> Self {
        Interface::Name(n)
    }
}

impl Interface {
    /// (ifindex, name), checking that the interface exists.
    pub fn resolve(&self) -> Result<(u32, String), DatapathError> {
        match self {
            Interface::Index(i) => {
                let name = ifname(*i).ok_or(DatapathError::NoSuchIfindex { ifindex: *i })?;
                Ok((*i, name))
            }
            Interface::Name(n) => {
                let i =
                    ifindex(n).ok_or_else(|| DatapathError::NoSuchInterface { name: n.clone() })?;
                Ok((i, n.clone()))
            }
        }
    }
}

/// The index of interface `name`, if it exists.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// The name of interface `index`, if it exists.
pub fn ifname(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has the IF_NAMESIZE bytes if_indextoname may write.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success `buf` holds a NUL-terminated name.
    let name = unsafe { CStr::from_ptr(buf.as_ptr()) };
    name.to_str().ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_round_trips() {
        let i = ifindex("lo").unwrap_or_else(|| panic!("no lo"));
        assert_eq!(ifname(i).as_deref(), Some("lo"));
        assert_eq!(
            Interface::from("lo").resolve().ok(),
            Some((i, "lo".to_owned()))
        );
        assert_eq!(
            Interface::from(i).resolve().ok(),
            Some((i, "lo".to_owned()))
        );
    }

    #[test]
    fn missing_interfaces_are_named_in_the_error() {
        let e = Interface::from("enforcer-nope0").resolve().err();
        assert!(e.is_some_and(|e| e.to_string().contains("enforcer-nope0")));
        assert_eq!(ifindex("enforcer-nope0"), None);
    }
}
