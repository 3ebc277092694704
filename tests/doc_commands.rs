//! Every command the operator documentation shows is run, so the documents cannot drift from
//! what the programs accept.
//!
//! The documents are README.md, docs/*.md and bench/README.md. A fenced block marked `sh` holds
//! commands an operator runs as shown (a trailing `\` continues a line):
//! - `vrouterctl …` lines run here, in document order, against one real vrouterd
//!   (`/var/run/vrouter` in a path stands for its socket base); each must succeed;
//! - `scripts/<name>.sh …` lines must name a script that CI runs: `.ci/run`, the scripts it
//!   runs, and the scripts those run, found by reading them, and the scripts the tests in
//!   `tests/` run (CI runs every test);
//! - any other line must appear, as written, in one of those scripts.
//!
//! A block marked `sh-host` holds commands that change the host or need hardware this machine
//! lacks (binding a NIC to vfio, creating SR-IOV VFs, starting vrouterd on a PCI device): each
//! program must be installed here, `dpdk-devbind.py` status queries run, and a `vrouterd`
//! command line must be accepted by vrouterd's option parser (`/etc/vrouter/vrouterd.toml`
//! stands for the file the package installs there, `packaging/vrouterd.toml`); the rest is not
//! run.
//! Any other fence (diagrams, usage synopses) is not a command.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use testkit::vrouterd::Vrouterd;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn vrouterd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vrouterd"))
}

/// The documents, in the order their commands run (the README sets up what the others show).
fn documents() -> Vec<PathBuf> {
    let mut docs = vec![root().join("README.md")];
    let mut more: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    more.sort();
    docs.extend(more);
    docs.push(root().join("bench/README.md"));
    docs
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Shown {
    doc: String,
    line: usize,
    kind: String,
    command: String,
}

/// The commands of every fenced block of `text` marked `sh` or `sh-host`, continuation lines
/// joined, comments and blank lines left out.
fn commands(doc: &str, text: &str) -> Vec<Shown> {
    let mut out = Vec::new();
    let mut fence: Option<String> = None;
    let mut pending: Option<(usize, String)> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(info) = line.strip_prefix("```") {
            fence = match fence {
                None => Some(info.trim().to_owned()),
                Some(_) => None,
            };
            continue;
        }
        let Some(kind) = fence.as_deref().filter(|k| *k == "sh" || *k == "sh-host") else {
            continue;
        };
        if pending.is_none() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        let (start, mut acc) = pending.take().unwrap_or((n + 1, String::new()));
        if let Some(head) = line.strip_suffix('\\') {
            acc.push_str(head.trim_end());
            acc.push(' ');
            pending = Some((start, acc));
            continue;
        }
        acc.push_str(line);
        out.push(Shown {
            doc: doc.to_owned(),
            line: start,
            kind: kind.to_owned(),
            command: acc,
        });
    }
    assert!(fence.is_none(), "{doc}: a fenced block is not closed");
    out
}

/// Splits a shown command into words the way a shell would for these simple lines (no quotes,
/// no expansions in the documents' commands).
fn words(command: &str) -> Vec<String> {
    assert!(
        !command.contains(['"', '\'', '$', '`', '|', ';', '&', '<', '>', '*']),
        "a documented command should be a plain command line: {command}"
    );
    command.split_whitespace().map(str::to_owned).collect()
}

/// The scripts CI runs: `.ci/run` and the scripts the tests run (`tests/*.rs`), then every
/// `scripts/<name>.sh` named in a script already found, transitively. The test files themselves
/// are not in the set.
fn ci_scripts() -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut todo = vec![".ci/run".to_owned()];
    let mut tests: Vec<PathBuf> = std::fs::read_dir(root().join("tests"))
        .expect("tests/")
        .map(|e| e.expect("tests/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    tests.sort();
    for test in tests {
        let text = std::fs::read_to_string(&test).unwrap_or_else(|e| panic!("{test:?}: {e}"));
        todo.extend(scripts_named(&text));
    }
    while let Some(script) = todo.pop() {
        if !found.insert(script.clone()) {
            continue;
        }
        let text = std::fs::read_to_string(root().join(&script))
            .unwrap_or_else(|e| panic!("{script}: {e}"));
        todo.extend(scripts_named(&text));
    }
    found
}

/// The `scripts/<name>.sh` that exist and `text` names.
fn scripts_named(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for (i, _) in text.match_indices("scripts/") {
        let rest = &text[i..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || "/-_.".contains(c)))
            .unwrap_or(rest.len());
        let name = &rest[..end];
        if name.ends_with(".sh") && root().join(name).is_file() {
            names.push(name.to_owned());
        }
    }
    names
}

fn normalised(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn on_path(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn vrouterctl_bin() -> PathBuf {
    testkit::vrouterd::vrouterctl_bin(&vrouterd_bin())
}

fn run_vrouterctl(bin: &Path, vr: &Vrouterd, shown: &Shown) {
    let base = vr.socket_base();
    let base = base.to_str().expect("utf-8 path");
    let args: Vec<String> = words(&shown.command)[1..]
        .iter()
        .map(|w| w.replace("/var/run/vrouter", base))
        .collect();
    let out = Command::new(bin)
        .args(&args)
        .env("VROUTER_SOCKET", vr.control_socket())
        .output()
        .expect("run vrouterctl");
    assert!(
        out.status.success(),
        "{}:{}: `{}` failed ({}):\n{}{}",
        shown.doc,
        shown.line,
        shown.command,
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn check_host_command(shown: &Shown) {
    // Host commands may redirect (`echo 4 > /sys/…`); only their words matter here.
    let w: Vec<String> = shown
        .command
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let program = w[0].as_str();
    let at = format!("{}:{}", shown.doc, shown.line);
    match program {
        "vrouterd" => {
            // Everything up to `--` through the option parser: a misspelt or removed option
            // fails here. `--help` last, so every option before it is parsed first.
            let shipped = root().join("packaging/vrouterd.toml");
            let shipped = shipped.to_str().expect("utf-8 path");
            let opts: Vec<&str> = w[1..]
                .iter()
                .map(String::as_str)
                .take_while(|a| *a != "--")
                .map(|a| match a {
                    "/etc/vrouter/vrouterd.toml" => shipped,
                    a => a,
                })
                .collect();
            let out = Command::new(vrouterd_bin())
                .args(&opts)
                .arg("--help")
                .output()
                .expect("run vrouterd --help");
            assert!(
                out.status.success(),
                "{at}: vrouterd refuses the documented options `{}`: {}",
                shown.command,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        "dpdk-devbind.py" if w.iter().any(|a| a.starts_with("--status")) => {
            let out = Command::new(program)
                .args(&w[1..])
                .output()
                .expect("run dpdk-devbind.py");
            assert!(out.status.success(), "{at}: `{}` failed", shown.command);
        }
        _ => assert!(on_path(program), "{at}: `{program}` is not installed here"),
    }
}

#[test]
fn every_documented_command_runs_or_is_run_by_ci() {
    let mut shown = Vec::new();
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap_or_else(|e| panic!("{doc:?}: {e}"));
        let name = doc
            .strip_prefix(root())
            .expect("under the workspace")
            .display()
            .to_string();
        shown.extend(commands(&name, &text));
    }
    assert!(
        shown.iter().filter(|s| s.kind == "sh").count() >= 10,
        "the documents show commands; found {shown:?}"
    );

    let ci = ci_scripts();
    let ci_text: Vec<String> = ci
        .iter()
        .map(|s| normalised(&std::fs::read_to_string(root().join(s)).expect("script")))
        .collect();

    let ctl = vrouterctl_bin();
    let vr = Vrouterd::start(&vrouterd_bin(), &["--idle-sleep-us", "20"], &[]);
    let mut ran = 0;
    for s in &shown {
        let at = format!("{}:{}", s.doc, s.line);
        if s.kind == "sh-host" {
            check_host_command(s);
            continue;
        }
        let w = words(&s.command);
        if w[0] == "vrouterctl" {
            run_vrouterctl(&ctl, &vr, s);
            ran += 1;
        } else if w[0].starts_with("scripts/") {
            assert!(
                ci.contains(&w[0]),
                "{at}: `{}` is not run by CI (CI runs {ci:?})",
                s.command
            );
        } else {
            let cmd = normalised(&s.command);
            assert!(
                ci_text.iter().any(|t| t.contains(&cmd)),
                "{at}: `{}` is neither run here nor by a script CI runs",
                s.command
            );
        }
    }
    eprintln!("ran {ran} vrouterctl commands from the documents");
    let status = vr.stop();
    assert!(status.success(), "vrouterd exited with {status}");
}

#[test]
fn the_command_extractor_reads_fences_continuations_and_kinds() {
    let text = "text\n```sh\n# comment\nvrouterctl a \\\n    --b c\n\nvrouterctl d\n```\n\
                ```\nnot a command\n```\n  ```sh-host\n  modprobe vfio-pci\n  ```\n";
    let got = commands("x.md", text);
    let cmds: Vec<(&str, &str, usize)> = got
        .iter()
        .map(|s| (s.kind.as_str(), s.command.as_str(), s.line))
        .collect();
    assert_eq!(
        cmds,
        vec![
            ("sh", "vrouterctl a --b c", 4),
            ("sh", "vrouterctl d", 7),
            ("sh-host", "modprobe vfio-pci", 13),
        ]
    );
}
