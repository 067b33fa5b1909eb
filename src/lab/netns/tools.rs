//! The outside tools the netns lab runs: iproute2's `ip` (and, through `ip netns exec`,
//! `sysctl` and `iptables-restore`), with their errors turned into what to do.

use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};

use super::NetnsError;

/// Runs `ip ARGS`, with `stdin` as its input when given.
pub(super) fn ip(args: &[&str], stdin: Option<&str>) -> Result<(), NetnsError> {
    let program = args
        .iter()
        .position(|a| *a == "exec")
        .and_then(|i| args.get(i + 2))
        .copied()
        .unwrap_or("ip");
    let mut command = Command::new("ip");
    command
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let shown = format!("ip {}", args.join(" "));
    let failed = |stderr: String| NetnsError::Command {
        what: format!("set up the lab with {program}"),
        command: shown.clone(),
        stderr,
    };
    let mut child = command.spawn().map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => NetnsError::MissingTool {
            tool: "ip",
            install: "apt-get install iproute2",
        },
        _ => failed(e.to_string()),
    })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A command that fails early closes its input: its error says why.
        let _ = pipe.write_all(text.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| failed(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(failed(if stderr.is_empty() {
            format!("exit status {}", out.status)
        } else {
            stderr
        }))
    }
}

pub(super) fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            dir.join(tool)
                .metadata()
                .is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
        })
    })
}
