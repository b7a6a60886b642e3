//! Records the commit the binary is built from, for `bedside_build_info{commit}`:
//! `BEDSIDE_BUILD_COMMIT` if set (a container build without `.git`), else `git rev-parse`,
//! else `unknown`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-env-changed=BEDSIDE_BUILD_COMMIT");
    // Rebuilt when HEAD moves (a commit, a checkout): both files git updates then.
    for path in ["HEAD", "logs/HEAD"] {
        if let Some(file) = git(&["rev-parse", "--git-path", path]) {
            println!("cargo:rerun-if-changed={file}");
        }
    }
    let commit = std::env::var("BEDSIDE_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=BEDSIDE_BUILD_COMMIT={commit}");
}
