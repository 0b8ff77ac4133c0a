//! `tzkms completions` and `tzkms man` against the real binary: the scripts parse and the pages render,
//! and both cover every subcommand the binary's own `--help` lists (so a new subcommand is covered
//! without touching this file).

use std::path::Path;
use std::process::Command;

use crate::process::BIN;

fn tzkms(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("TZKMS_CONFIG")
        .output()
        .expect("run tzkms");
    assert!(
        out.status.success(),
        "tzkms {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Every subcommand path (`["keys", "generate"]`, …) from the "Commands:" sections of `--help`.
fn subcommands() -> Vec<Vec<String>> {
    fn walk(path: Vec<String>, all: &mut Vec<Vec<String>>) {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let help = tzkms(&args);
        let names: Vec<String> = help
            .lines()
            .skip_while(|l| l.trim_end() != "Commands:")
            .skip(1)
            .take_while(|l| !l.trim().is_empty())
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| *n != "help")
            .map(str::to_owned)
            .collect();
        for name in names {
            let mut sub = path.clone();
            sub.push(name);
            all.push(sub.clone());
            walk(sub, all);
        }
    }
    let mut all = Vec::new();
    walk(Vec::new(), &mut all);
    for expected in [&["serve"][..], &["keys", "generate"], &["completions"], &["man"]] {
        assert!(
            all.iter().any(|p| p == expected),
            "--help does not list {expected:?}: {all:?}"
        );
    }
    all
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[test]
fn bash_completion_parses_and_completes_every_subcommand() {
    let script = tzkms(&["completions", "bash"]);
    let bash = which("bash").expect("bash");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tzkms.bash");
    std::fs::write(&file, &script).unwrap();
    let out = Command::new(&bash).arg("-n").arg(&file).output().unwrap();
    assert!(
        out.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // clap_complete's bash script keys each (sub)command on its joined path, e.g.
    // tzkms__subcmd__keys__subcmd__generate (a `-` in a name becomes the separator too).
    for path in subcommands() {
        let key: String = std::iter::once("tzkms".to_owned())
            .chain(path.iter().map(|n| n.replace('-', "__subcmd__")))
            .collect::<Vec<_>>()
            .join("__subcmd__");
        assert!(
            script.contains(&key),
            "bash completion has no case for `tzkms {}` ({key})",
            path.join(" ")
        );
    }
    // The script runs: sourcing it and asking for completions of `tzkms ke` offers `keys`.
    let probe = format!(
        "source {}; COMP_WORDS=(tzkms ke); COMP_CWORD=1; COMP_LINE='tzkms ke'; COMP_POINT=8; \
         _tzkms tzkms ke tzkms; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        file.display()
    );
    let out = Command::new(&bash).args(["-c", &probe]).output().unwrap();
    let offered = String::from_utf8_lossy(&out.stdout);
    assert!(
        offered.lines().any(|l| l == "keys"),
        "completing `tzkms ke` offered {offered:?}; stderr {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn zsh_and_fish_completions_name_every_subcommand() {
    let zsh = tzkms(&["completions", "zsh"]);
    let fish = tzkms(&["completions", "fish"]);
    assert!(
        zsh.starts_with("#compdef tzkms"),
        "{}",
        &zsh[..zsh.len().min(200)]
    );
    for path in subcommands() {
        let last = path.last().unwrap();
        assert!(
            zsh.contains(&format!("'{last}:")),
            "zsh completion lacks {path:?}"
        );
        assert!(
            fish.contains(&format!("-a \"{last}\"")),
            "fish completion lacks {path:?}"
        );
    }
    for (shell, script, check) in [("zsh", &zsh, &["-n"][..]), ("fish", &fish, &["--no-execute"][..])] {
        if let Some(bin) = which(shell) {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("script");
            std::fs::write(&file, script).unwrap();
            let out = Command::new(bin).args(check).arg(&file).output().unwrap();
            assert!(
                out.status.success(),
                "{shell} {check:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn an_unknown_shell_is_refused_with_the_choices() {
    let out = Command::new(BIN).args(["completions", "tcsh"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tcsh") && err.contains("bash") && err.contains("fish"),
        "{err}"
    );
}

fn check_page(page: &Path, name: &str) {
    let text = std::fs::read_to_string(page).unwrap();
    assert!(
        text.lines().any(|l| l.starts_with(&format!(".TH {name} 1 "))),
        "{}: no .TH header for {name}",
        page.display()
    );
    for section in [".SH NAME", ".SH SYNOPSIS", ".SH OPTIONS"] {
        assert!(text.contains(section), "{} lacks {section}", page.display());
    }
    // groff renders it without warnings (-ww: all warnings). -k runs preconv on the UTF-8 input (help
    // texts have `…`), as man(1) does.
    if let Some(groff) = which("groff") {
        let out = Command::new(&groff)
            .args(["-k", "-man", "-Tutf8", "-ww"])
            .arg(page)
            .output()
            .unwrap();
        // grotty marks bold and underline by overstriking (`N\bN`): keep the last character of each.
        let mut rendered = String::new();
        for c in String::from_utf8_lossy(&out.stdout).chars() {
            if c == '\u{8}' {
                rendered.pop();
            } else {
                rendered.push(c);
            }
        }
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "groff {}: {}",
            page.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(rendered.contains("NAME") && rendered.contains(name), "{rendered}");
    } else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have groff (groff-base)"
        );
    }
}

#[test]
fn man_pages_exist_and_render_for_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("man1");
    let listed = tzkms(&["man", "--out-dir", out_dir.to_str().unwrap()]);
    let mut expected = vec!["tzkms".to_owned()];
    expected.extend(subcommands().iter().map(|p| format!("tzkms-{}", p.join("-"))));
    let mut on_disk: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut wanted: Vec<String> = expected.iter().map(|n| format!("{n}.1")).collect();
    wanted.sort();
    assert_eq!(
        on_disk, wanted,
        "man pages written vs subcommands listed by --help"
    );
    assert_eq!(listed.lines().count(), wanted.len(), "{listed}");
    for name in &expected {
        check_page(&out_dir.join(format!("{name}.1")), name);
    }
    // The top page lists the subcommands; a leaf page documents its options.
    let top = std::fs::read_to_string(out_dir.join("tzkms.1")).unwrap();
    assert!(
        top.contains("tzkms\\-keys(1)") || top.contains("tzkms-keys(1)"),
        "{top}"
    );
    let generate = std::fs::read_to_string(out_dir.join("tzkms-keys-generate.1")).unwrap();
    assert!(generate.contains("\\-\\-curve"), "{generate}");
}

#[test]
fn man_refuses_an_unwritable_directory_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let out = Command::new(BIN)
        .args(["man", "--out-dir"])
        .arg(file.join("man1"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--out-dir") && err.contains("not-a-dir"), "{err}");
}

/// Completions and man pages come from the clap definitions alone: a configuration that does not load
/// (here TZKMS_CONFIG names a missing file, as on a packaging machine) does not stop them.
#[test]
fn completions_and_man_pages_need_no_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let out = Command::new(BIN)
        .args(["completions", "bash"])
        .env("TZKMS_CONFIG", &missing)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("tzkms"));
    let pages = dir.path().join("man");
    let out = Command::new(BIN)
        .args(["man", "--out-dir", pages.to_str().unwrap()])
        .env("TZKMS_CONFIG", &missing)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(pages.join("tzkms.1").exists());
    // The same missing file stops a command that needs the configuration, naming it.
    let out = Command::new(BIN)
        .args(["keys", "list"])
        .env("TZKMS_CONFIG", &missing)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
}
