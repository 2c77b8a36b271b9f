//! Progress bars (indicatif) for the long commands: `civkitd migrate` and
//! `civkit-sample verify-history`. A bar is drawn on stderr only when
//! stderr is a terminal; in a pipe or a log it is hidden and the commands
//! print their plain lines instead.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar counting `total` things called `unit`.
pub fn bar(total: u64, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let template =
        format!("{{msg}} [{{bar:32}}] {{pos}}/{{len}} {unit} ({{per_sec}}, {{eta}} left)");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
