//! Shell completions: each binary prints a script per shell, and bash,
//! loading it, completes the binary's real subcommands and options.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests assert by panicking

mod common;

use std::process::Command;

/// What bash's completion offers for `line` (the words typed so far; the
/// last one is being completed), with `binary`'s script loaded.
fn bash_completes(binary: &str, line: &[&str]) -> Vec<String> {
    let script = Command::new(binary)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(script.status.success());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("completion.bash");
    std::fs::write(&path, &script.stdout).unwrap();
    let name = line[0];
    let words = line
        .iter()
        .map(|w| format!("'{w}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let probe = format!(
        "source '{}'\n\
         spec=$(complete -p {name}) || exit 3\n\
         fn=$(sed -E 's/.* -F ([^ ]+) .*/\\1/' <<<\"$spec\")\n\
         COMP_WORDS=({words}); COMP_CWORD={}; COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}\n\
         \"$fn\" {name} \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        path.display(),
        line.len() - 1
    );
    let out = Command::new("bash").args(["-c", &probe]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completes_each_binarys_commands() {
    let cases: [(&str, &[&str], &str); 5] = [
        (common::CIVKITD, &["civkitd", "exa"], "example-config"),
        (common::CIVKITD, &["civkitd", "migrate", "--f"], "--from"),
        (common::CLI, &["civkit-cli", "pe"], "peers"),
        (common::CLI, &["civkit-cli", "peers", "con"], "connect"),
        (common::SAMPLE, &["civkit-sample", "order", "can"], "cancel"),
    ];
    for (binary, line, want) in cases {
        let got = bash_completes(binary, line);
        assert!(got.iter().any(|w| w == want), "{line:?}: {got:?}");
    }
}

#[test]
fn every_shell_gets_a_script() {
    for binary in [common::CIVKITD, common::CLI, common::SAMPLE] {
        for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
            let out = Command::new(binary)
                .args(["completions", shell])
                .output()
                .unwrap();
            assert!(out.status.success(), "{binary} {shell}");
            let text = String::from_utf8(out.stdout).unwrap();
            assert!(text.contains("completions"), "{binary} {shell}: {text}");
        }
        // An unknown shell is refused with the choices.
        let out = Command::new(binary)
            .args(["completions", "tcsh"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("bash"));
    }
}
