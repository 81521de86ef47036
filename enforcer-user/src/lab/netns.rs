//! Network namespaces and links: `ip` commands, running code inside a namespace, and the
//! cleanup registry that removes what a lab created (also from the Ctrl-C handler).
//!
//! Everything the lab creates is registered here *before* it is created, so a cleanup at any
//! point (normal end, error, Drop, SIGINT/SIGTERM) removes exactly the lab's own objects and
//! nothing else: namespaces by their names (deleting a namespace destroys the veth pairs in it)
//! and the bpffs pin directory.

use std::{
    fs::File,
    io::{self, Write as _},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc, Mutex, MutexGuard, OnceLock, Weak,
        atomic::{AtomicU32, Ordering},
    },
};

use super::LabError;

/// Where `ip netns add` keeps its namespace handles.
pub const NETNS_DIR: &str = "/run/netns";

/// Runs `ip ARGS` and returns its stdout; a failure carries `ip`'s stderr.
pub fn ip(args: &[&str]) -> Result<String, LabError> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| LabError::Tool {
            message: format!(
                "cannot run `ip` (iproute2): {e}; install iproute2 (`apt-get install iproute2`)"
            ),
        })?;
    if !out.status.success() {
        return Err(LabError::Setup {
            step: format!("ip {}", args.join(" ")),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs several `ip` commands in one process (`ip [-n NETNS] -batch -`). Stops at the first
/// failing command unless `force`; the error names the failing line.
pub fn ip_batch(netns: Option<&str>, lines: &[String], force: bool) -> Result<(), LabError> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut cmd = Command::new("ip");
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    if force {
        cmd.arg("-force");
    }
    cmd.args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| LabError::Tool {
        message: format!(
            "cannot run `ip` (iproute2): {e}; install iproute2 (`apt-get install iproute2`)"
        ),
    })?;
    let script = lines.join("\n") + "\n";
    if let Some(mut stdin) = child.stdin.take() {
        // A write error shows up as the command's failure below.
        let _ = stdin.write_all(script.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| LabError::Setup {
        step: "ip -batch".to_string(),
        message: e.to_string(),
    })?;
    if !out.status.success() && !force {
        return Err(LabError::Setup {
            step: format!(
                "ip{} -batch ({} commands)",
                netns.map(|n| format!(" -n {n}")).unwrap_or_default(),
                lines.len()
            ),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Names of the network namespaces `ip netns` knows.
pub fn list_netns() -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    match std::fs::read_dir(NETNS_DIR) {
        Ok(dir) => {
            for e in dir {
                names.push(e?.file_name().to_string_lossy().into_owned());
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    names.sort();
    Ok(names)
}

/// Runs `f` on a thread that has entered network namespace `ns` (setns(2) changes only the
/// calling thread's namespace, so the rest of the process is untouched). Sockets created by
/// `f` stay in `ns` wherever they are used afterwards.
pub fn in_netns<T: Send>(
    ns: &str,
    f: impl FnOnce() -> io::Result<T> + Send,
) -> Result<T, LabError> {
    let path = Path::new(NETNS_DIR).join(ns);
    let handle = File::open(&path).map_err(|e| LabError::Setup {
        step: format!("open {}", path.display()),
        message: e.to_string(),
    })?;
    let result = std::thread::scope(|s| {
        s.spawn(|| {
            enter(&handle)?;
            f()
        })
        .join()
    });
    match result {
        Ok(r) => r.map_err(|e| LabError::Setup {
            step: format!("inside network namespace {ns}"),
            message: e.to_string(),
        }),
        Err(_) => Err(LabError::Setup {
            step: format!("inside network namespace {ns}"),
            message: "the worker thread panicked".to_string(),
        }),
    }
}

/// Moves the calling thread into the network namespace `handle` refers to.
pub fn enter(handle: &File) -> io::Result<()> {
    // SAFETY: setns with a valid, open namespace file descriptor; CLONE_NEWNET changes only
    // the calling thread's network namespace.
    if unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Opens the handle of a named network namespace (for [`enter`]).
pub fn open_netns(ns: &str) -> io::Result<File> {
    File::open(Path::new(NETNS_DIR).join(ns))
}

/// Writes sysctls (`net/ipv4/ip_forward` style paths under `/proc/sys`) in namespace `ns`.
/// `/proc/sys/net` shows the namespace of the thread that opens the file.
pub fn sysctls(ns: &str, settings: &[(String, &str)]) -> Result<(), LabError> {
    let settings: Vec<(String, String)> = settings
        .iter()
        .map(|(k, v)| (k.clone(), (*v).to_string()))
        .collect();
    in_netns(ns, move || {
        for (key, value) in &settings {
            let path = Path::new("/proc/sys").join(key);
            std::fs::write(&path, value).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("writing {} = {value}: {e}", path.display()),
                )
            })?;
        }
        Ok(())
    })
}

/// What one lab owns; removed by [`Cleanup::run`].
#[derive(Debug, Default)]
struct Owned {
    /// The lab id: every namespace of the lab is named `<id>-...` (the signal handler also
    /// sweeps by this prefix, for a namespace being created at that very moment).
    id: Option<String>,
    netns: Vec<String>,
    pin_dir: Option<PathBuf>,
}

/// The resources of one lab, removable from any thread, at most once each.
#[derive(Debug, Default)]
pub struct Cleanup {
    owned: Mutex<Owned>,
}

impl Cleanup {
    /// A new, empty cleanup list, registered for the Ctrl-C handler.
    pub fn new() -> Arc<Cleanup> {
        let c = Arc::new(Cleanup::default());
        let mut reg = registry().lock().unwrap_or_else(|p| p.into_inner());
        reg.retain(|w| w.strong_count() > 0);
        reg.push(Arc::downgrade(&c));
        c
    }

    fn owned(&self) -> MutexGuard<'_, Owned> {
        self.owned.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the lab id (namespaces are named `<id>-...`).
    pub fn set_id(&self, id: &str) {
        self.owned().id = Some(id.to_string());
    }

    /// Records a namespace about to be created.
    pub fn add_netns(&self, name: &str) {
        self.owned().netns.push(name.to_string());
    }

    /// Records the pin directory about to be created.
    pub fn set_pin_dir(&self, dir: &Path) {
        self.owned().pin_dir = Some(dir.to_path_buf());
    }

    /// Removes everything recorded so far (namespaces, then pins); safe to call again.
    /// Returns what could not be removed. Sockets still open in a namespace keep the kernel
    /// object alive until they close, so the lab closes its sockets first.
    pub fn run(&self) -> Vec<String> {
        remove(&mut self.owned())
    }
}

fn remove(owned: &mut Owned) -> Vec<String> {
    let mut problems = Vec::new();
    let names: Vec<String> = owned.netns.drain(..).rev().collect();
    if !names.is_empty() {
        let lines: Vec<String> = names.iter().map(|n| format!("netns del {n}")).collect();
        // -force: keep going past namespaces that were never created.
        if let Err(e) = ip_batch(None, &lines, true) {
            problems.push(e.to_string());
        }
        for n in &names {
            if Path::new(NETNS_DIR).join(n).exists() {
                problems.push(format!(
                    "network namespace {n} is still there; remove it with `ip netns del {n}`"
                ));
            }
        }
    }
    if let Some(dir) = owned.pin_dir.take()
        && dir.exists()
        && let Err(e) = std::fs::remove_dir_all(&dir)
    {
        problems.push(format!(
            "cannot remove {}: {e}; remove it with `rm -r {}`",
            dir.display(),
            dir.display()
        ));
    }
    problems
}

fn registry() -> &'static Mutex<Vec<Weak<Cleanup>>> {
    static REGISTRY: OnceLock<Mutex<Vec<Weak<Cleanup>>>> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(Vec::new()))
}

/// Cleans up every live lab of this process and exits (the signal handler's job). Each lab's
/// list stays locked until the exit, so the lab's own thread cannot register (and so cannot
/// create) anything more; a namespace whose creation was already under way is caught by a
/// second sweep of the lab's `<id>-` prefix.
fn cleanup_all_and_exit(code: i32) -> ! {
    let labs: Vec<Arc<Cleanup>> = registry()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    let mut held = Vec::new();
    for lab in &labs {
        let mut owned = lab.owned();
        for p in remove(&mut owned) {
            eprintln!("warning: {p}");
        }
        held.push(owned);
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    for owned in &held {
        if let Some(id) = &owned.id {
            let prefix = format!("{id}-");
            let stray: Vec<String> = list_netns()
                .unwrap_or_default()
                .into_iter()
                .filter(|n| n.starts_with(&prefix))
                .map(|n| format!("netns del {n}"))
                .collect();
            let _ = ip_batch(None, &stray, true);
        }
    }
    std::process::exit(code);
}

/// Installs (once per process) a SIGINT/SIGTERM watcher: it removes every live lab's
/// namespaces and pins, then exits with 128 + the signal number, as a shell would report it.
///
/// tokio (already a dependency, with its `signal` feature) runs the watcher on a
/// current-thread runtime of its own thread, so no signal-handling crate is added. Once
/// installed the handler stays for the life of the process (tokio never uninstalls it), so
/// Ctrl-C keeps terminating the process after a lab ends as well.
pub fn install_signal_handler() -> Result<(), LabError> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    let result = INSTALLED.get_or_init(|| {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let spawned = std::thread::Builder::new()
            .name("lab-signals".to_string())
            .spawn(move || {
                use tokio::signal::unix::{SignalKind, signal};
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                rt.block_on(async move {
                    let (mut int, mut term) = match (
                        signal(SignalKind::interrupt()),
                        signal(SignalKind::terminate()),
                    ) {
                        (Ok(i), Ok(t)) => (i, t),
                        (Err(e), _) | (_, Err(e)) => {
                            let _ = ready_tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    let signo = tokio::select! {
                        _ = int.recv() => libc::SIGINT,
                        _ = term.recv() => libc::SIGTERM,
                    };
                    eprintln!("lab: interrupted, removing the lab's namespaces and pins");
                    cleanup_all_and_exit(128 + signo);
                });
            });
        match spawned {
            Ok(_) => ready_rx
                .recv()
                .unwrap_or_else(|_| Err("the signal thread ended early".to_string())),
            Err(e) => Err(e.to_string()),
        }
    });
    result.clone().map_err(|message| LabError::Setup {
        step: "installing the SIGINT/SIGTERM handler".to_string(),
        message,
    })
}

/// A lab id short enough for interface names (`enf<pid % 10000><counter>`), not used by any
/// existing namespace.
pub fn new_lab_id() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let pid = std::process::id() % 10_000;
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed) % 100;
        // The counter has two digits, so the length tells where the pid ends: ids of
        // different processes cannot collide.
        let id = format!("enf{pid}{n:02}");
        let taken = list_netns()
            .map(|names| names.iter().any(|x| x.starts_with(&format!("{id}-"))))
            .unwrap_or(false);
        if !taken {
            return id;
        }
    }
}
