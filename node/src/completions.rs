//! Shell completions for the three binaries (`<binary> completions <shell>`),
//! written by clap_complete from each binary's own argument definitions.

/// Print `cmd`'s completion script for `shell` on stdout.
pub fn print(shell: clap_complete::Shell, cmd: clap::Command) {
    print!("{}", script(shell, cmd));
}

/// `cmd`'s completion script for `shell`.
fn script(shell: clap_complete::Shell, mut cmd: clap::Command) -> String {
    let name = cmd.get_name().to_string();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, name.clone(), &mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    if shell != clap_complete::Shell::Bash {
        return text;
    }
    // clap_complete's bash script spells the state of a hyphenated binary
    // (`civkit-cli peers`) two ways: `civkit__cli__subcmd__peers` where it
    // walks the words, `civkit__subcmd__cli__subcmd__peers` in the arms
    // that answer, so nothing past the first word completes
    // (clap-rs/clap#6421, open in clap_complete 4.6). Spell the arms as the
    // walk does; once fixed upstream this replaces nothing.
    text.replace(&name.replace('-', "__subcmd__"), &name.replace('-', "__"))
}
