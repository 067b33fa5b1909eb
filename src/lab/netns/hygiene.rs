//! What keeps the netns lab from leaving anything behind: fresh ids, the removal of a
//! lab's namespaces, the reaper that removes a lab whose owner was killed, and the
//! removal of leftovers. Only namespaces a lab's record lists are ever removed.

use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use rand::RngExt;

use super::tools::ip;
use super::{NETNS_DIR, NetnsError};
use crate::lab::registry::{Record, Registry};

/// A lab id no record and no namespace uses: six characters of `[a-z0-9]`.
pub(super) fn fresh_id(registry: &Registry) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    loop {
        let id: String = (0..6)
            .map(|_| char::from(CHARS[rng.random_range(0..CHARS.len())]))
            .collect();
        let prefix = format!("latmap-{id}-");
        let taken = std::fs::read_dir(NETNS_DIR).is_ok_and(|d| {
            d.filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        });
        if !taken && !registry.exists(&id) {
            return id;
        }
    }
}

/// Removes the named namespaces (those that exist), as `ip netns del` does.
pub fn remove_namespaces(names: &[String]) -> Result<(), NetnsError> {
    let present: Vec<&String> = names
        .iter()
        .filter(|n| Path::new(NETNS_DIR).join(n).exists())
        .collect();
    if present.is_empty() {
        return Ok(());
    }
    // Regions first, the core last (the order does not matter to the kernel).
    let batch: String = present.iter().map(|n| format!("netns del {n}\n")).collect();
    ip(&["-force", "-batch", "-"], Some(&batch))?;
    let left: Vec<&&String> = present
        .iter()
        .filter(|n| Path::new(NETNS_DIR).join(n).exists())
        .collect();
    if left.is_empty() {
        Ok(())
    } else {
        Err(NetnsError::Command {
            what: "remove the lab's namespaces".into(),
            command: "ip netns del".into(),
            stderr: format!(
                "still there: {}",
                left.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
    }
}

/// The processes (other than this one) whose network namespace is one of `names`.
pub fn processes_in(names: &[String]) -> Vec<u32> {
    let ids: Vec<(u64, u64)> = names
        .iter()
        .filter_map(|n| std::fs::metadata(Path::new(NETNS_DIR).join(n)).ok())
        .map(|m| (m.dev(), m.ino()))
        .collect();
    if ids.is_empty() {
        return Vec::new();
    }
    let me = std::process::id();
    let Ok(proc_dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = proc_dir
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|m| ids.contains(&(m.dev(), m.ino())))
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// Starts `latmap lab reap ID`: it waits on a pipe from this process and removes the
/// lab if the pipe closes without word that the lab is gone (this process died).
pub(super) fn spawn_reaper(
    exe: &Path,
    registry: &Registry,
    id: &str,
) -> Option<(Child, ChildStdin)> {
    let spawned = Command::new(exe)
        .args(["lab", "reap", id])
        .env("LATMAP_LAB_DIR", registry.dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: a Ctrl-C at the terminal stops the owner, which
        // cleans up, but not the reaper, which must outlive a harder death.
        .process_group(0)
        .spawn();
    match spawned {
        Ok(mut child) => {
            let stdin = child.stdin.take()?;
            Some((child, stdin))
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the lab's reaper; if latmap is killed, `latmap lab down --all` removes the lab");
            None
        }
    }
}

/// What `latmap lab reap ID` does: waits until its input closes; unless the owner said
/// the lab is gone, waits for the owner to be gone too, then removes the lab.
pub fn reap(registry: &Registry, id: &str) {
    let mut said = Vec::new();
    let _ = io::stdin().lock().read_to_end(&mut said);
    if said.starts_with(b"done") {
        return;
    }
    let Ok(Some(record)) = registry.read(id) else {
        return;
    };
    // The pipe closes as the owner exits; give it a moment to be gone.
    let deadline = Instant::now() + Duration::from_secs(2);
    while record.owner.alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if record.owner.alive() {
        return;
    }
    if remove_namespaces(&record.namespaces).is_ok() {
        let _ = registry.remove(id);
    }
}

/// Removes a lab whose owner is gone: its namespaces and its record.
pub fn remove_leftover(registry: &Registry, record: &Record) -> Result<(), NetnsError> {
    remove_namespaces(&record.namespaces)?;
    registry
        .remove(&record.id)
        .map_err(|source| NetnsError::Registry {
            dir: registry.dir().to_path_buf(),
            source,
        })
}
