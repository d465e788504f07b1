//! Where the client keeps its files: `--data-dir`, else `$SOTTO_DATA_DIR`, else
//! `$XDG_DATA_HOME/sotto`, else `~/.local/share/sotto`. Created with mode 0700.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// Environment variable that moves the data dir.
pub const DATA_DIR_ENV: &str = "SOTTO_DATA_DIR";

/// The default data dir when neither the flag nor `SOTTO_DATA_DIR` is set.
pub fn default_data_dir() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("sotto");
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/sotto"),
        None => PathBuf::from(".sotto"),
    }
}

/// Create `dir` (and parents) if missing; a directory this creates gets mode 0700.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}
