//! How latmap touches the file system, in one place: what it reads must be a regular
//! file (a FIFO or a device given as an argument would block or never end), what it
//! creates gets private permissions, and the temporary files an interrupted atomic
//! write leaves are recognised and removed.
//!
//! Plain `std::fs` underneath; no knowledge of what the files hold.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Permissions of every file latmap creates (before the umask): the owner reads and
/// writes, the owner's group reads, others nothing.
pub const FILE_MODE: u32 = 0o640;

/// Permissions of every folder latmap creates (before the umask).
pub const DIR_MODE: u32 = 0o750;

/// Opens `path` for reading, refusing anything but a regular file without blocking
/// on it: a FIFO is opened without waiting for a writer, then refused.
pub fn open_regular(path: &Path) -> io::Result<fs::File> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        let what = if meta.is_dir() {
            "a folder"
        } else {
            "not a regular file (a FIFO, socket or device)"
        };
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is {what}; pass a regular file", path.display()),
        ));
    }
    // Reads of a regular file never block; clear the flag all the same so the
    // handle behaves as usual.
    let flags = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let mut flags = nix::fcntl::OFlag::from_bits_truncate(flags);
    flags.remove(nix::fcntl::OFlag::O_NONBLOCK);
    nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(file)
}

/// The whole content of the regular file `path`.
pub fn read_regular(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = open_regular(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Creates `dir` and its missing parents with [`DIR_MODE`].
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
}

/// Creates (or truncates) `path` for writing with [`FILE_MODE`].
pub fn create(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)
}

/// The name of the temporary file an atomic write of `name` by process `pid` uses.
pub fn temp_name(name: &str, pid: u32) -> String {
    format!(".{name}.tmp-{pid}")
}

/// The process that wrote a temporary file named by [`temp_name`], if `name` is one.
pub fn temp_owner(name: &str) -> Option<u32> {
    let (_, pid) = name.strip_prefix('.')?.rsplit_once(".tmp-")?;
    pid.parse().ok()
}

/// Removes the temporary files (and links) in `dir` that interrupted atomic writes
/// left: those of processes no longer running (a live process may be writing one
/// now). Returns the names removed. A folder that does not exist has none.
pub fn remove_stale_temps(dir: &Path) -> io::Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = temp_owner(&name) else {
            continue;
        };
        if pid != std::process::id() && !alive(pid) && !entry.file_type()?.is_dir() {
            match fs::remove_file(entry.path()) {
                Ok(()) => removed.push(name),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

/// Whether a process with this id runs (on this machine, in this PID namespace).
fn alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, "x").unwrap();
        assert_eq!(read_regular(&file).unwrap(), b"x");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        // Returns at once instead of waiting for a writer.
        let e = read_regular(&fifo).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let e = read_regular(dir.path()).unwrap_err();
        assert!(e.to_string().contains("a folder"), "{e}");
        assert!(read_regular(&dir.path().join("absent")).is_err());
    }

    #[test]
    fn created_files_and_folders_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        create_dir_all(&sub).unwrap();
        let f = sub.join("f");
        create(&f).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        // The umask may take more away, never add.
        assert_eq!(mode(&sub) & !DIR_MODE, 0);
        assert_eq!(mode(&f) & !FILE_MODE, 0);
        assert_eq!(mode(&f) & 0o007, 0);
    }

    #[test]
    fn stale_temporary_files_are_recognised() {
        assert_eq!(temp_owner(&temp_name("run.json", 42)), Some(42));
        assert_eq!(temp_owner("run.json"), None);
        assert_eq!(temp_owner(".run.json.tmp-x"), None);
        let dir = tempfile::tempdir().unwrap();
        // A pid that cannot run: above the kernel's limit (4194304).
        let dead = dir.path().join(temp_name("run.json", 4_194_305));
        let mine = dir.path().join(temp_name("run.json", std::process::id()));
        fs::write(&dead, "half").unwrap();
        fs::write(&mine, "being written").unwrap();
        let removed = remove_stale_temps(dir.path()).unwrap();
        assert_eq!(removed, [temp_name("run.json", 4_194_305)]);
        assert!(!dead.exists() && mine.exists());
        assert!(
            remove_stale_temps(&dir.path().join("absent"))
                .unwrap()
                .is_empty()
        );
    }
}
