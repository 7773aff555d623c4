//! The documentation the package ships, generated from what the binary itself knows, so it
//! cannot drift from the code: clockguard(8) and a page per command from the CLI definition
//! (clap_mangen), shell completions (clap_complete), clockguard.toml(5) from the
//! commented default configuration embedded in the binary (`clockguard.toml`), and the
//! systemd journal's message catalog for clockguard's entries.
//!
//! `clockguard generate-docs --out DIR` writes them; `cargo xtask package` puts them in the
//! .deb. The page text is made by pure functions, the writing is at the edge.

use std::{fmt::Write as _, path::Path};

use anyhow::{Context, Result};
use clap::Command;

/// Every file `generate-docs` writes, relative to its output directory: man pages under
/// `man/`, the journal's message catalog under `catalog/`, completions under
/// `completions/` with the names their shells look for.
pub fn write_all(cli: &Command, out: &Path) -> Result<Vec<String>> {
    let cli = &visible(cli);
    let mut written = Vec::new();
    let mut put = |rel: String, bytes: &[u8]| -> Result<()> {
        let path = out.join(&rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(rel);
        Ok(())
    };
    for (name, page) in command_pages(cli)? {
        put(format!("man/{name}.8"), &page)?;
    }
    put(
        "man/clockguard.toml.5".into(),
        config_page(crate::config::EMBEDDED_DEFAULT, env!("CARGO_PKG_VERSION")).as_bytes(),
    )?;
    put(
        "catalog/clockguard.catalog".into(),
        clockguard_core::journald::catalog().as_bytes(),
    )?;
    for (shell, file) in [
        (clap_complete::Shell::Bash, "completions/clockguard"),
        (clap_complete::Shell::Zsh, "completions/_clockguard"),
        (clap_complete::Shell::Fish, "completions/clockguard.fish"),
    ] {
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut cli.clone(), "clockguard", &mut text);
        put(file.into(), &text)?;
    }
    Ok(written)
}

/// The CLI as users see it: without the hidden commands (clap_complete would offer them).
/// The top level has no arguments of its own besides --help and --version.
fn visible(cli: &Command) -> Command {
    let mut shown = Command::new(cli.get_name().to_string())
        .subcommands(cli.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    if let Some(version) = cli.get_version() {
        shown = shown.version(version.to_string());
    }
    if let Some(about) = cli.get_about() {
        shown = shown.about(about.clone());
    }
    if let Some(long_about) = cli.get_long_about() {
        shown = shown.long_about(long_about.clone());
    }
    shown
}

/// What clockguard(8) says besides the CLI definition: where its files are.
const MAIN_PAGE_TAIL: &str = "\
.SH FILES
.TP
/etc/clockguard/clockguard.toml
The configuration, see \\fBclockguard.toml\\fR(5).
.TP
/var/lib/clockguard/
The audit journal (hash-chained JSON Lines) and the NTP drift.
.TP
/run/clockguard/
The control socket the commands other than \\fBrun\\fR ask the daemon through.
.TP
/sys/fs/bpf/clockguard/
The guard's programs pinned in guard mode: they outlive a daemon that is killed.
.SH SEE ALSO
\\fBclockguard.toml\\fR(5), \\fBsystemctl\\fR(1), \\fBchronyc\\fR(1), \\fBkeepalived\\fR(8)
";

/// clockguard(8), then clockguard-COMMAND(8) for each command (as git and cargo do), each
/// rendered by clap_mangen from the CLI definition. Hidden commands have no page.
fn command_pages(cli: &Command) -> Result<Vec<(String, Vec<u8>)>> {
    let mut cli = cli.clone();
    cli.build();
    let mut pages = Vec::new();
    let mut page = Vec::new();
    clap_mangen::Man::new(cli.clone())
        .section("8")
        .render(&mut page)?;
    page.extend_from_slice(MAIN_PAGE_TAIL.as_bytes());
    pages.push(("clockguard".to_string(), page));
    for sub in cli.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("clockguard-{}", sub.get_name());
        let mut page = Vec::new();
        clap_mangen::Man::new(sub.clone().name(name.clone()))
            .section("8")
            .render(&mut page)?;
        pages.push((name, page));
    }
    Ok(pages)
}

/// A line of the default configuration, as the page reads it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum ConfigLine<'a> {
    Blank,
    /// `# text`: the comment's text.
    Comment(&'a str),
    /// `# key = value`: a key with no default (unset), shown as its example.
    UnsetKey(&'a str),
    /// `[section]`.
    Section(&'a str),
    /// `key = value` (a value may go on over the following lines, as an array does).
    Key(&'a str),
    /// `# [[service]]`: from here on, a commented example of a table array.
    Example,
}

fn classify(line: &str) -> ConfigLine<'_> {
    let line = line.trim_end();
    if line.trim().is_empty() {
        return ConfigLine::Blank;
    }
    if let Some(rest) = line.strip_prefix('#') {
        let text = rest.strip_prefix(' ').unwrap_or(rest);
        if text.starts_with("[[") {
            return ConfigLine::Example;
        }
        let is_key = text.split_once(" = ").is_some_and(|(key, _)| {
            !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        });
        return if is_key {
            ConfigLine::UnsetKey(text)
        } else {
            ConfigLine::Comment(text)
        };
    }
    if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
        return ConfigLine::Section(name);
    }
    ConfigLine::Key(line)
}

/// Text for roff: a leading dot or quote would be read as a request, a backslash as an
/// escape, a hyphen may be set as a hyphen rather than the minus a flag needs.
fn roff_text(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

/// What config_page has read but not yet written: the comment lines since the last key,
/// and the keys that comment is about (keys in a row share the comment above them:
/// `minpoll` and `maxpoll` under "Poll interval bounds").
#[derive(Default)]
struct ConfigDoc<'a> {
    comment: Vec<&'a str>,
    keys: Vec<String>,
    in_settings: bool,
}

impl<'a> ConfigDoc<'a> {
    /// The SETTINGS heading before the first section or key; keys before any [section]
    /// are the file's top level.
    fn settings_heading(&mut self, page: &mut String, before_key: bool) {
        if !self.in_settings {
            let top_level = if before_key { "\n.SS (top level)" } else { "" };
            let _ = writeln!(page, ".SH SETTINGS{top_level}");
            self.in_settings = true;
        }
    }

    /// A key (its tag: name and default), described by the comment above it.
    fn key(&mut self, page: &mut String, tag: String) {
        self.settings_heading(page, true);
        self.keys.push(tag);
    }

    /// The keys read since the last comment, as one entry with the comment as its text.
    fn end_keys(&mut self, page: &mut String) {
        if self.keys.is_empty() {
            return;
        }
        let _ = writeln!(page, ".TP\n{}", self.keys.join(", "));
        if !self.comment.is_empty() {
            let _ = writeln!(page, "{}", roff_text(&self.comment.join(" ")));
        }
        self.keys.clear();
        self.comment.clear();
    }

    /// A comment no key follows (the file's header, a section's notes): a paragraph.
    fn end_paragraph(&mut self, page: &mut String) {
        self.end_keys(page);
        if !self.comment.is_empty() {
            let _ = writeln!(page, ".PP\n{}", roff_text(&self.comment.join(" ")));
            self.comment.clear();
        }
    }
}

/// clockguard.toml(5), from the commented default configuration: the comments before its
/// first key are the description; each `[section]` is a subsection; each key is listed with
/// its default and the comments that precede it; `# key = value` lines are keys unset by
/// default, shown with their example; a commented `# [[table]]` block is an example.
pub fn config_page(default_toml: &str, version: &str) -> String {
    let mut page = String::new();
    let _ = writeln!(
        page,
        ".TH CLOCKGUARD.TOML 5 \"\" \"clockguard {version}\" \"File Formats\"\n\
         .SH NAME\nclockguard.toml \\- clockguard's configuration\n\
         .SH SYNOPSIS\n/etc/clockguard/clockguard.toml\n\
         .SH DESCRIPTION\n\
         clockguard reads this TOML file at start and on reload (\\fBsystemctl reload \
         clockguard\\fR, SIGHUP or \\fBclockguard reload\\fR); without it, the defaults below \
         apply (they are embedded in the binary). An unknown key, a value of the wrong type or \
         out of range is refused with the file, line and key, and on reload the configuration \
         in use is kept."
    );
    let mut doc = ConfigDoc::default();
    let mut lines = default_toml.lines();
    while let Some(line) = lines.next() {
        match classify(line) {
            ConfigLine::Blank => doc.end_paragraph(&mut page),
            // An empty `#` line only spaces a comment out.
            ConfigLine::Comment("") => {}
            ConfigLine::Comment(text) => {
                doc.end_keys(&mut page);
                doc.comment.push(text);
            }
            ConfigLine::Section(name) => {
                doc.end_keys(&mut page);
                doc.settings_heading(&mut page, false);
                let _ = writeln!(page, ".SS [{}]", roff_text(name));
                doc.end_paragraph(&mut page);
            }
            kind @ (ConfigLine::Key(first) | ConfigLine::UnsetKey(first)) => {
                let unset = matches!(kind, ConfigLine::UnsetKey(_));
                let mut value_lines = vec![first.trim().to_string()];
                // An array written over several lines: up to its closing bracket.
                if first.trim_end().ends_with('[') {
                    for more in lines.by_ref() {
                        let more = more.trim();
                        value_lines.push(more.to_string());
                        if more.starts_with(']') {
                            break;
                        }
                    }
                }
                let (key, value) = value_lines[0]
                    .split_once(" = ")
                    .map_or((value_lines[0].as_str(), ""), |(k, v)| (k, v));
                let value = std::iter::once(value)
                    .chain(value_lines[1..].iter().map(String::as_str))
                    .collect::<Vec<_>>()
                    .join(" ")
                    .replace("[ ", "[")
                    .replace(", ]", "]");
                let default = if unset {
                    format!("unset by default; for example {value}")
                } else {
                    format!("default {value}")
                };
                doc.key(
                    &mut page,
                    format!("\\fB{}\\fR ({})", roff_text(key), roff_text(&default)),
                );
            }
            ConfigLine::Example => {
                doc.end_keys(&mut page);
                let _ = writeln!(page, ".SH EXAMPLE");
                doc.end_paragraph(&mut page);
                let _ = writeln!(page, ".PP\n.nf\n.RS 4");
                let _ = writeln!(page, "{}", roff_text(line.trim_start_matches("# ")));
                for more in lines.by_ref() {
                    let text = more.strip_prefix('#').unwrap_or(more);
                    let text = text.strip_prefix(' ').unwrap_or(text);
                    let _ = writeln!(page, "{}", roff_text(text));
                }
                let _ = writeln!(page, ".RE\n.fi");
            }
        }
    }
    doc.end_keys(&mut page);
    doc.end_paragraph(&mut page);
    let _ = writeln!(
        page,
        ".SH FILES\n/etc/clockguard/clockguard.toml\n\
         .SH SEE ALSO\n\\fBclockguard\\fR(8), \\fBclockguard\\-reload\\fR(8), \
         \\fBchrony.conf\\fR(5), \\fBkeepalived.conf\\fR(5)"
    );
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
# The header.
# Second line.

# observe or guard.
mode = \"observe\"

[ntp]
# Sources.
servers = []
# Poll bounds.
minpoll = 4
maxpoll = 10
# Bounds.
slew_instead = [
    \"/usr/sbin/qemu-ga\",
    \"/usr/bin/sntp\",
]
# Serve on this address.
# serve = \"0.0.0.0:123\"

[control]
# Notes with no key.

# Tracked services. Example:
#
# [[service]]
# name = \"dovecot\"
# # What matches.
";

    #[test]
    fn lines_are_told_apart() {
        assert_eq!(
            classify("# serve = \"x\""),
            ConfigLine::UnsetKey("serve = \"x\"")
        );
        assert_eq!(
            classify("# Only x = y here"),
            ConfigLine::Comment("Only x = y here")
        );
        assert_eq!(classify("#"), ConfigLine::Comment(""));
        assert_eq!(classify("[bound]"), ConfigLine::Section("bound"));
        assert_eq!(classify("# [[service]]"), ConfigLine::Example);
        assert_eq!(classify("  "), ConfigLine::Blank);
        assert_eq!(
            classify("mode = \"guard\""),
            ConfigLine::Key("mode = \"guard\"")
        );
    }

    #[test]
    fn each_key_has_its_default_and_its_comment() {
        let page = config_page(SAMPLE, "9.9.9");
        assert!(page.starts_with(".TH CLOCKGUARD.TOML 5 \"\" \"clockguard 9.9.9\""));
        assert!(page.contains(".PP\nThe header. Second line.\n"), "{page}");
        assert!(
            page.contains(
                ".SS (top level)\n.TP\n\\fBmode\\fR (default \"observe\")\nobserve or guard.\n"
            ),
            "{page}"
        );
        assert!(
            page.contains(".SS [ntp]\n.TP\n\\fBservers\\fR (default [])\nSources.\n"),
            "{page}"
        );
        assert!(
            page.contains(
                ".TP\n\\fBminpoll\\fR (default 4), \\fBmaxpoll\\fR (default 10)\nPoll bounds.\n"
            ),
            "{page}"
        );
        assert!(
            page.contains(
                "\\fBslew_instead\\fR (default [\"/usr/sbin/qemu\\-ga\", \"/usr/bin/sntp\"])\nBounds.\n"
            ),
            "{page}"
        );
        assert!(
            page.contains("\\fBserve\\fR (unset by default; for example \"0.0.0.0:123\")\nServe on this address.\n"),
            "{page}"
        );
        assert!(
            page.contains(".SS [control]\n.PP\nNotes with no key.\n"),
            "{page}"
        );
        assert!(
            page.contains(".SH EXAMPLE\n.PP\nTracked services. Example:\n.PP\n.nf\n.RS 4\n[[service]]\nname = \"dovecot\"\n# What matches.\n.RE\n.fi\n"),
            "{page}"
        );
    }

    #[test]
    fn text_cannot_become_a_roff_request() {
        assert_eq!(roff_text(".hidden"), "\\&.hidden");
        assert_eq!(roff_text("'quoted"), "\\&'quoted");
        assert_eq!(roff_text("a\\b -x"), "a\\eb \\-x");
    }

    #[test]
    fn the_embedded_default_documents_every_section() {
        let page = config_page(crate::config::EMBEDDED_DEFAULT, "0");
        for section in [
            "audit", "guard", "ntp", "bound", "control", "timers", "metrics",
        ] {
            assert!(
                page.contains(&format!(".SS [{section}]\n")),
                "[{section}] missing"
            );
        }
        for key in [
            "mode",
            "max_slew_ppm",
            "drift_floor_ppb",
            "read_group",
            "listen",
        ] {
            assert!(page.contains(&format!("\\fB{key}\\fR (")), "{key} missing");
        }
        assert!(page.contains(".SH EXAMPLE\n"));
        // Every entry has its text: no key goes undescribed.
        let lines: Vec<&str> = page.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if *line == ".TP" {
                assert!(
                    lines.get(i + 2).is_some_and(|text| !text.starts_with('.')),
                    "{} has no description",
                    lines[i + 1]
                );
            }
        }
    }
}
