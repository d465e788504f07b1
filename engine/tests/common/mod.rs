//! Helpers shared by the tests that drive the `sotto` CLI as processes.
#![allow(clippy::unwrap_used, dead_code)]

use std::path::Path;
use std::process::Command;

/// The `sotto` binary with its own data directory and no environment defaults.
pub fn sotto(data: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sotto"));
    cmd.env_remove("SOTTO_DATA_DIR")
        .env_remove("SOTTO_SERVER")
        .arg("--data-dir")
        .arg(data);
    cmd
}

/// A new identity in `data`; returns its id.
pub fn new_identity(data: &Path) -> String {
    let out = sotto(data).args(["id", "new"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let shown = sotto(data).args(["id", "show", "--json"]).output().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    json["id"].as_str().unwrap().to_owned()
}
