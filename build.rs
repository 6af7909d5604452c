//! Records the git commit vgpuctl is built from, so `vgpuctl --version` (and
//! each helper's, which link this crate) can say which source a binary is.
//! A build from a source tarball has no .git: it sets VGPUCTL_BUILD_COMMIT,
//! or the commit reads "unknown".

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=VGPUCTL_BUILD_COMMIT");
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let git = Path::new(&dir).join(".git");
    // Rebuild when HEAD moves: HEAD itself, the branch it names, packed refs.
    if git.join("HEAD").is_file() {
        println!("cargo:rerun-if-changed={}", git.join("HEAD").display());
        println!("cargo:rerun-if-changed={}", git.join("packed-refs").display());
        if let Ok(head) = std::fs::read_to_string(git.join("HEAD")) {
            if let Some(r) = head.trim().strip_prefix("ref: ") {
                println!("cargo:rerun-if-changed={}", git.join(r).display());
            }
        }
    }
    let commit = std::env::var("VGPUCTL_BUILD_COMMIT").ok().filter(|c| plain(c)).or_else(|| head_commit(&dir)).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=VGPUCTL_BUILD_COMMIT={commit}");
}

/// Only a plain id (hex, or a tag-like word) may end up in the version line.
fn plain(c: &str) -> bool {
    !c.is_empty() && c.len() <= 64 && c.chars().all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '-' | '_' | '+'))
}

fn head_commit(dir: &str) -> Option<String> {
    let out = Command::new("git").args(["-C", dir, "rev-parse", "--short=12", "HEAD"]).output().ok()?;
    let c = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && plain(c.trim())).then(|| c.trim().to_string())
}
