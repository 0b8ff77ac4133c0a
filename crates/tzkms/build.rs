//! Build information for `tzkms --version` and the `tzkms_build_info` metric: the git commit HEAD was
//! at, the compiler, the profile and the target. A build from a tarball
//! without git says `unknown`; packagers can set `TZKMS_BUILD_COMMIT`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn main() {
    println!("cargo:rerun-if-env-changed=TZKMS_BUILD_COMMIT");
    println!("cargo:rerun-if-changed=build.rs");
    let commit = std::env::var("TZKMS_BUILD_COMMIT").ok().or_else(|| {
        let head = git(&["rev-parse", "--short=12", "HEAD"])?;
        // Rebuild the string when HEAD moves (commit, checkout, reset): git logs every move.
        if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
            for f in ["HEAD", "logs/HEAD", "index"] {
                let path = std::path::Path::new(&dir).join(f);
                if path.exists() {
                    println!("cargo:rerun-if-changed={}", path.display());
                }
            }
        }
        Some(head)
    });
    println!(
        "cargo:rustc-env=TZKMS_BUILD_COMMIT={}",
        commit.unwrap_or_else(|| "unknown".into())
    );
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "rustc unknown".into());
    println!("cargo:rustc-env=TZKMS_BUILD_RUSTC={rustc_version}");
    println!(
        "cargo:rustc-env=TZKMS_BUILD_PROFILE={}",
        std::env::var("PROFILE").unwrap_or_default()
    );
    println!(
        "cargo:rustc-env=TZKMS_BUILD_TARGET={}",
        std::env::var("TARGET").unwrap_or_default()
    );
}
