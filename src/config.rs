//! The configuration file (`--config FILE`): one TOML key per command-line option, named after
//! its long option (`fwd-lcores = "1,3"`, `idle-sleep-us = 50`, flags as booleans, the EAL
//! arguments as `eal-args = ["--no-pci"]`).
//!
//! The keys and their types come from clap's own argument list, so a new option has its key
//! without anything added here. The file's settings become arguments placed before the command
//! line's, and every option overrides itself, so the command line wins; clap then checks the
//! whole as it checks a command line. Each value is first checked on its own, so that a bad one
//! is reported with the file, line and key it came from rather than as an option nobody typed.

use std::any::TypeId;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, ArgMatches, Command};
use toml_edit::{Document, Item, Value};

/// Arguments about reading the options rather than options: they have no key in the file.
const NOT_IN_FILE: &[&str] = &["config", "check_config"];

/// The long option that names the configuration file.
const CONFIG_OPTION: &str = "--config";

/// What a value must be in TOML.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scalar {
    Integer,
    /// A number: an integer is taken as well (`run-for = 10`).
    Float,
    Bool,
    String,
}

impl Scalar {
    /// The value's type as clap parses it.
    fn of(arg: &Arg) -> Scalar {
        let parsed = arg.get_value_parser().type_id();
        let integers = [
            TypeId::of::<u8>(),
            TypeId::of::<u16>(),
            TypeId::of::<u32>(),
            TypeId::of::<u64>(),
            TypeId::of::<usize>(),
            TypeId::of::<i8>(),
            TypeId::of::<i16>(),
            TypeId::of::<i32>(),
            TypeId::of::<i64>(),
            TypeId::of::<isize>(),
        ];
        if integers.iter().any(|&t| parsed == t) {
            Scalar::Integer
        } else if parsed == TypeId::of::<f64>() || parsed == TypeId::of::<f32>() {
            Scalar::Float
        } else if parsed == TypeId::of::<bool>() {
            Scalar::Bool
        } else {
            // Paths, addresses, lists written as text (`"1,3"`): whatever clap parses from text.
            Scalar::String
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Scalar::Integer => "an integer",
            Scalar::Float => "a number",
            Scalar::Bool => "a boolean (true or false)",
            Scalar::String => "a string",
        }
    }

    /// The value as clap reads it from a command line.
    fn text(self, value: &Value) -> Result<String, String> {
        match (self, value) {
            (Scalar::Integer | Scalar::Float, Value::Integer(i)) => Ok(i.value().to_string()),
            (Scalar::Float, Value::Float(f)) => Ok(f.value().to_string()),
            (Scalar::Bool, Value::Boolean(b)) => Ok(b.value().to_string()),
            (Scalar::String, Value::String(s)) => Ok(s.value().clone()),
            _ => Err(wrong_type(self.describe(), value)),
        }
    }

    /// A value clap accepted, written back as TOML.
    fn render(self, raw: &OsStr) -> String {
        let raw = raw.to_string_lossy();
        let value = match self {
            Scalar::Integer => raw.parse::<i64>().ok().map(Value::from),
            Scalar::Float => raw.parse::<f64>().ok().map(Value::from),
            Scalar::Bool => raw.parse::<bool>().ok().map(Value::from),
            Scalar::String => None,
        };
        value
            .unwrap_or_else(|| Value::from(raw.as_ref()))
            .to_string()
    }
}

/// How an argument is written in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A switch: `true` gives it, `false` leaves it out.
    Flag,
    /// A switch given several times (`-v -v`): how many times.
    Count,
    /// An option with one value.
    One(Scalar),
    /// A repeatable option, or the arguments after `--`: an array.
    Many(Scalar),
}

/// An argument that has a key in the file.
struct Key<'a> {
    name: String,
    arg: &'a Arg,
    kind: Kind,
}

impl Key<'_> {
    /// What goes on the command line for `value`.
    fn args(&self, value: &Item) -> Result<Vec<OsString>, String> {
        let option = |text: String| match self.arg.get_long() {
            // One word, so that a value starting with `-` is never taken for an option.
            Some(long) => OsString::from(format!("--{long}={text}")),
            None => OsString::from(text),
        };
        let switch = || OsString::from(format!("--{}", self.arg.get_long().unwrap_or_default()));
        let value = match value {
            Item::Value(v) => v,
            Item::Table(_) | Item::ArrayOfTables(_) => {
                return Err("expected a value, found a table".into());
            }
            Item::None => return Ok(Vec::new()),
        };
        match self.kind {
            Kind::Flag => match value {
                Value::Boolean(b) if *b.value() => Ok(vec![switch()]),
                Value::Boolean(_) => Ok(Vec::new()),
                other => Err(wrong_type(Scalar::Bool.describe(), other)),
            },
            Kind::Count => match value {
                Value::Integer(n) => match usize::try_from(*n.value()) {
                    Ok(n) => Ok(vec![switch(); n]),
                    Err(_) => Err(format!("expected a count >= 0, found {}", n.value())),
                },
                other => Err(wrong_type(Scalar::Integer.describe(), other)),
            },
            Kind::One(scalar) => {
                let text = scalar.text(value)?;
                self.check(&text)?;
                Ok(vec![option(text)])
            }
            Kind::Many(scalar) => {
                let Value::Array(items) = value else {
                    let each = scalar.describe().trim_start_matches("a ");
                    return Err(wrong_type(&format!("an array of {each}s"), value));
                };
                items
                    .iter()
                    .map(|item| {
                        let text = scalar.text(item)?;
                        self.check(&text)?;
                        Ok(option(text))
                    })
                    .collect()
            }
        }
    }

    /// Runs the value through the option's own parser, alone: rules that tie options together
    /// (`requires`) are checked later, on the whole.
    fn check(&self, text: &str) -> Result<(), String> {
        let probe = Arg::new("value")
            .long("value")
            .action(ArgAction::Set)
            .value_parser(self.arg.get_value_parser().clone());
        Command::new("vrouterd")
            .no_binary_name(true)
            .arg(probe)
            .try_get_matches_from([OsString::from(format!("--value={text}"))])
            .map(drop)
            .map_err(|e| {
                let why = std::error::Error::source(&e).map_or_else(
                    || {
                        let rendered = e.render().to_string();
                        let first = rendered.lines().next().unwrap_or_default();
                        first.trim_start_matches("error: ").to_owned()
                    },
                    ToString::to_string,
                );
                format!("invalid value {text:?}: {why}")
            })
    }
}

/// Every argument of `cmd` that has a key in the file, in the command's order.
fn keys(cmd: &Command) -> Vec<Key<'_>> {
    cmd.get_arguments()
        .filter(|arg| !NOT_IN_FILE.contains(&arg.get_id().as_str()))
        .filter_map(|arg| {
            let kind = match arg.get_action() {
                ArgAction::SetTrue | ArgAction::SetFalse => Kind::Flag,
                ArgAction::Count => Kind::Count,
                ArgAction::Set => Kind::One(Scalar::of(arg)),
                ArgAction::Append => Kind::Many(Scalar::of(arg)),
                // Help and version: nothing to configure.
                _ => return None,
            };
            let name = arg
                .get_long()
                .map_or_else(|| arg.get_id().as_str().replace('_', "-"), str::to_owned);
            Some(Key { name, arg, kind })
        })
        .collect()
}

/// The keys a configuration file for `cmd` may hold.
#[cfg(test)]
pub fn key_names(cmd: &Command) -> Vec<String> {
    keys(cmd).into_iter().map(|k| k.name).collect()
}

fn wrong_type(expected: &str, found: &Value) -> String {
    let name = match found {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date-time",
        Value::Array(_) => "an array",
        Value::InlineTable(_) => "a table",
    };
    format!(
        "expected {expected}, found {name} {}",
        found.to_string().trim()
    )
}

/// A configuration file that cannot be used; says which file, line and key.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.problem)
    }
}

impl std::error::Error for ConfigError {}

/// A file's settings as command-line arguments.
#[derive(Debug, Default)]
pub struct FileArgs {
    /// Options, each with the id of the argument it sets.
    options: Vec<(String, Vec<OsString>)>,
    /// Positional arguments (those after `--`).
    trailing: Vec<OsString>,
}

/// Reads the settings in `text`, the contents of `file`, for `cmd`.
pub fn file_args(cmd: &Command, file: &Path, text: &str) -> Result<FileArgs, ConfigError> {
    let error = |line, key: Option<&str>, problem: String| ConfigError {
        file: file.to_owned(),
        line,
        key: key.map(str::to_owned),
        problem,
    };
    let doc = Document::parse(text).map_err(|e| error(None, None, e.to_string()))?;
    let line_of = |span: Option<std::ops::Range<usize>>| {
        span.map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
    };
    let keys = keys(cmd);
    let mut args = FileArgs::default();
    for (name, item) in doc.as_table().iter() {
        let line = line_of(doc.as_table().key(name).and_then(toml_edit::Key::span));
        let Some(key) = keys.iter().find(|k| k.name == name) else {
            let hint = closest(name, keys.iter().map(|k| k.name.as_str()))
                .map(|k| format!(" (did you mean {k}?)"))
                .unwrap_or_default();
            return Err(error(line, Some(name), format!("unknown key{hint}")));
        };
        let values = key.args(item).map_err(|p| error(line, Some(name), p))?;
        if key.arg.is_positional() {
            args.trailing.extend(values);
        } else {
            args.options
                .push((key.arg.get_id().as_str().to_owned(), values));
        }
    }
    Ok(args)
}

/// The known key a mistyped one was most likely meant to be.
fn closest<'a>(typed: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    known
        .map(|k| (edit_distance(typed, k), k))
        .filter(|&(d, k)| d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// Why a command line (with its configuration file) could not be used.
#[derive(Debug)]
pub enum ParseError {
    /// clap refused the arguments (or was asked for help); `file` had supplied some of them.
    Clap {
        error: clap::Error,
        file: Option<PathBuf>,
    },
    /// The configuration file is unreadable or wrong.
    File(ConfigError),
}

/// The file named by the last `--config` before `--`, found before clap parses anything
/// because the file's settings must go in front of the command line.
fn config_path(argv: &[OsString]) -> Option<PathBuf> {
    let mut found = None;
    let mut words = argv.iter().skip(1);
    while let Some(word) = words.next() {
        if word == "--" {
            break;
        }
        if word == CONFIG_OPTION {
            found = words.next().map(PathBuf::from);
        } else if let Some(path) = word
            .to_str()
            .and_then(|w| w.strip_prefix(CONFIG_OPTION))
            .and_then(|w| w.strip_prefix('='))
        {
            found = Some(PathBuf::from(path));
        }
    }
    found
}

/// Parses `argv` with `cmd`, taking the settings of the `--config` file it names (if any) as
/// defaults the command line overrides. `cmd` must have a `--config` option.
pub fn parse(cmd: Command, argv: &[OsString]) -> Result<ArgMatches, ParseError> {
    let Some(file) = config_path(argv) else {
        return cmd
            .try_get_matches_from(argv)
            .map_err(|error| ParseError::Clap { error, file: None });
    };
    let text = std::fs::read_to_string(&file).map_err(|e| {
        ParseError::File(ConfigError {
            file: file.clone(),
            line: None,
            key: None,
            problem: format!("cannot read it: {e}"),
        })
    })?;
    let mut from_file = file_args(&cmd, &file, &text).map_err(ParseError::File)?;
    let cmd = cmd.args_override_self(true);
    let clap_error = |error| ParseError::Clap {
        error,
        file: Some(file.clone()),
    };
    // The arguments after `--` on the command line replace the file's list, not add to it.
    let (program, rest) = argv
        .split_first()
        .map_or((None, argv), |(p, r)| (Some(p), r));
    if rest.iter().any(|w| w == "--") {
        from_file.trailing.clear();
    }
    let merge = |from_file: &FileArgs| {
        let mut merged: Vec<OsString> = program.cloned().into_iter().collect();
        merged.extend(
            from_file
                .options
                .iter()
                .flat_map(|(_, a)| a.iter().cloned()),
        );
        merged.extend(rest.iter().cloned());
        if !from_file.trailing.is_empty() {
            merged.push("--".into());
            merged.extend(from_file.trailing.iter().cloned());
        }
        merged
    };
    let matches = cmd
        .clone()
        .try_get_matches_from(merge(&from_file))
        .map_err(clap_error)?;
    // Options with one value override themselves; repeatable ones add up, so the file's go if
    // the command line has any (more values than the file gave).
    let before = from_file.options.len();
    from_file.options.retain(|(id, args)| {
        let action = cmd
            .get_arguments()
            .find(|a| a.get_id() == id.as_str())
            .map(Arg::get_action);
        let given = match action {
            Some(ArgAction::Count) => usize::from(matches.get_count(id)),
            Some(ArgAction::Append) => matches.get_raw(id).map_or(0, |raw| raw.len()),
            _ => return true,
        };
        given <= args.len()
    });
    if from_file.options.len() == before {
        return Ok(matches);
    }
    cmd.try_get_matches_from(merge(&from_file))
        .map_err(clap_error)
}

/// The configuration `matches` hold, as a file `--config` reads back: every key, with the
/// defaults commented out (some options require others when given, even at their default).
pub fn render(cmd: &Command, matches: &ArgMatches) -> String {
    let mut out = String::new();
    for key in keys(cmd) {
        let id = key.arg.get_id().as_str();
        let raw: Vec<&OsStr> = matches
            .get_raw(id)
            .map(Iterator::collect)
            .unwrap_or_default();
        if matches!(
            matches.value_source(id),
            None | Some(clap::parser::ValueSource::DefaultValue)
        ) && !matches!(key.kind, Kind::One(_) if raw.is_empty())
        {
            out.push_str("# ");
        }
        let line = match key.kind {
            Kind::Flag => format!("{} = {}", key.name, matches.get_flag(id)),
            Kind::Count => format!("{} = {}", key.name, matches.get_count(id)),
            Kind::One(_) if raw.is_empty() => format!("# {} is not set", key.name),
            Kind::One(scalar) => format!("{} = {}", key.name, scalar.render(raw[0])),
            Kind::Many(scalar) => {
                let items: Vec<String> = raw.iter().map(|r| scalar.render(r)).collect();
                format!("{} = [{}]", key.name, items.join(", "))
            }
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A command with one argument of each kind the file knows.
    fn command() -> Command {
        Command::new("prog")
            .arg(
                Arg::new("config")
                    .long("config")
                    .value_parser(clap::value_parser!(PathBuf)),
            )
            .arg(Arg::new("name").long("name").default_value("none"))
            .arg(
                Arg::new("count")
                    .long("count")
                    .value_parser(clap::value_parser!(u32))
                    .default_value("1"),
            )
            .arg(
                Arg::new("ratio")
                    .long("ratio")
                    .value_parser(clap::value_parser!(f64)),
            )
            .arg(
                Arg::new("enabled")
                    .long("enabled")
                    .value_parser(clap::value_parser!(bool)),
            )
            .arg(Arg::new("fast").long("fast").action(ArgAction::SetTrue))
            .arg(Arg::new("verbose").long("verbose").action(ArgAction::Count))
            .arg(Arg::new("tag").long("tag").action(ArgAction::Append))
            .arg(Arg::new("extra_args").action(ArgAction::Append).last(true))
    }

    fn with_file(text: &str, args: &[&str]) -> (tempfile::TempDir, Result<ArgMatches, ParseError>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prog.toml");
        std::fs::write(&path, text).unwrap();
        let mut argv: Vec<OsString> = vec!["prog".into(), "--config".into(), path.into()];
        argv.extend(args.iter().map(OsString::from));
        let parsed = parse(command(), &argv);
        (dir, parsed)
    }

    fn file_error(text: &str) -> String {
        match with_file(text, &[]).1 {
            Err(ParseError::File(e)) => e.to_string(),
            other => panic!("{text:?}: expected a file error, got {other:?}"),
        }
    }

    #[test]
    fn keys_are_the_long_options_and_the_trailing_list() {
        assert_eq!(
            key_names(&command()),
            [
                "name",
                "count",
                "ratio",
                "enabled",
                "fast",
                "verbose",
                "tag",
                "extra-args"
            ]
        );
    }

    #[test]
    fn every_type_reads_from_the_file() {
        let (_dir, m) = with_file(
            "name = \"a b\"\ncount = 7\nratio = 2.5\nenabled = false\nfast = true\n\
             verbose = 2\ntag = [\"x\", \"y\"]\nextra-args = [\"--one\", \"-2\"]\n",
            &[],
        );
        let m = m.unwrap();
        assert_eq!(m.get_one::<String>("name").unwrap(), "a b");
        assert_eq!(*m.get_one::<u32>("count").unwrap(), 7);
        assert_eq!(*m.get_one::<f64>("ratio").unwrap(), 2.5);
        assert!(!*m.get_one::<bool>("enabled").unwrap());
        assert!(m.get_flag("fast"));
        assert_eq!(m.get_count("verbose"), 2);
        let strings = |id| {
            m.get_many::<String>(id)
                .unwrap()
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(strings("tag"), ["x", "y"]);
        assert_eq!(strings("extra_args"), ["--one", "-2"]);
        // An integer is a number too; `false` leaves a flag off.
        let (_dir, m) = with_file("ratio = 3\nfast = false\n", &[]);
        let m = m.unwrap();
        assert_eq!(*m.get_one::<f64>("ratio").unwrap(), 3.0);
        assert!(!m.get_flag("fast"));
        assert_eq!(m.get_one::<String>("name").unwrap(), "none");
    }

    #[test]
    fn the_command_line_wins() {
        let file = "name = \"file\"\ncount = 7\nverbose = 3\ntag = [\"f\"]\n\
                    extra-args = [\"--from-file\"]\n";
        let (_dir, m) = with_file(
            file,
            &[
                "--name",
                "cli",
                "--count=9",
                "--verbose",
                "--tag",
                "c",
                "--",
                "--from-cli",
            ],
        );
        let m = m.unwrap();
        assert_eq!(m.get_one::<String>("name").unwrap(), "cli");
        assert_eq!(*m.get_one::<u32>("count").unwrap(), 9);
        assert_eq!(m.get_count("verbose"), 1);
        let strings = |id| {
            m.get_many::<String>(id)
                .unwrap()
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(strings("tag"), ["c"]);
        assert_eq!(strings("extra_args"), ["--from-cli"]);
        // What the command line leaves alone comes from the file; an empty `--` empties the
        // list.
        let (_dir, m) = with_file(file, &["--name=cli", "--"]);
        let m = m.unwrap();
        assert_eq!(*m.get_one::<u32>("count").unwrap(), 7);
        assert_eq!(m.get_count("verbose"), 3);
        assert!(m.get_many::<String>("extra_args").is_none());
    }

    #[test]
    fn the_last_config_option_names_the_file() {
        let os = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            config_path(&os(&["p", "--config", "a", "--config=b"])),
            Some("b".into())
        );
        assert_eq!(
            config_path(&os(&["p", "--name", "x", "--config", "a"])),
            Some("a".into())
        );
        assert_eq!(config_path(&os(&["p", "--", "--config", "a"])), None);
        assert_eq!(config_path(&os(&["p", "--configs=a"])), None);
        assert_eq!(config_path(&os(&["p", "--config"])), None);
    }

    #[test]
    fn unknown_keys_are_refused_with_a_suggestion() {
        let e = file_error("name = \"x\"\n\ncont = 3\n");
        assert!(
            e.ends_with("prog.toml:3: cont: unknown key (did you mean count?)"),
            "{e}"
        );
        let e = file_error("config = \"/etc/other.toml\"\n");
        assert!(e.contains(":1: config: unknown key"), "{e}");
        let e = file_error("[section]\nname = \"x\"\n");
        assert!(e.contains("section: unknown key"), "{e}");
        assert!(!e.contains("did you mean"), "{e}");
    }

    #[test]
    fn wrong_types_are_refused_naming_the_key() {
        for (text, expect) in [
            (
                "count = \"7\"",
                "count: expected an integer, found a string \"7\"",
            ),
            (
                "count = 7.5",
                "count: expected an integer, found a float 7.5",
            ),
            ("ratio = \"x\"", "ratio: expected a number, found a string"),
            ("name = 3", "name: expected a string, found an integer 3"),
            (
                "enabled = \"yes\"",
                "enabled: expected a boolean (true or false), found a string",
            ),
            (
                "fast = 1",
                "fast: expected a boolean (true or false), found an integer 1",
            ),
            (
                "verbose = true",
                "verbose: expected an integer, found a boolean",
            ),
            ("verbose = -1", "verbose: expected a count >= 0, found -1"),
            (
                "tag = \"x\"",
                "tag: expected an array of strings, found a string \"x\"",
            ),
            (
                "extra-args = [1]",
                "extra-args: expected a string, found an integer 1",
            ),
            ("name = { a = 1 }", "name: expected a string, found a table"),
            ("[name]\na = 1", "name: expected a value, found a table"),
        ] {
            let e = file_error(text);
            assert!(
                e.contains("prog.toml:1: ") && e.contains(expect),
                "{text:?}: {e}"
            );
        }
    }

    #[test]
    fn bad_values_are_refused_naming_the_key() {
        let e = file_error("count = -3\n");
        assert!(
            e.contains("prog.toml:1: count: invalid value \"-3\": "),
            "{e}"
        );
        let e = file_error("\ncount = 99999999999\n");
        assert!(
            e.contains("prog.toml:2: count: invalid value \"99999999999\""),
            "{e}"
        );
    }

    #[test]
    fn broken_and_missing_files_are_refused_naming_the_file() {
        let e = file_error("name = \"unterminated\n");
        assert!(e.contains("prog.toml: TOML parse error at line 1"), "{e}");
        let e = file_error("name = \"a\"\nname = \"b\"\n");
        assert!(e.contains("prog.toml: TOML parse error at line 2"), "{e}");
        let argv: Vec<OsString> = ["prog", "--config", "/nonexistent/prog.toml"]
            .iter()
            .map(OsString::from)
            .collect();
        match parse(command(), &argv) {
            Err(ParseError::File(e)) => {
                assert!(e
                    .to_string()
                    .starts_with("/nonexistent/prog.toml: cannot read it"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn without_a_file_the_command_line_parses_as_ever() {
        let argv: Vec<OsString> = ["prog", "--name", "a", "--name", "b"]
            .iter()
            .map(OsString::from)
            .collect();
        // Given twice on the command line is still refused when no file is in play.
        assert!(matches!(
            parse(command(), &argv),
            Err(ParseError::Clap { file: None, .. })
        ));
    }

    #[test]
    fn the_rendered_configuration_reads_back_the_same() {
        let (_dir, m) = with_file(
            "name = \"q\\\"uote\"\nratio = 0.0\nfast = true\nverbose = 2\ntag = [\"x\"]\n\
             extra-args = [\"--a=b\"]\n",
            &["--count", "4"],
        );
        let text = render(&command(), &m.unwrap());
        assert!(text.contains("\ncount = 4\n"), "{text}");
        assert!(text.contains("\nratio = 0.0\n"), "{text}");
        assert!(text.contains("# enabled is not set\n"), "{text}");
        // Defaults are there, commented out.
        let (_dir, m) = with_file("", &[]);
        let defaults = render(&command(), &m.unwrap());
        assert!(
            defaults.starts_with("# name = \"none\"\n# count = 1\n"),
            "{defaults}"
        );
        assert!(
            defaults.contains("\n# fast = false\n# verbose = 0\n# tag = []\n"),
            "{defaults}"
        );
        let (_dir, again) = with_file(&text, &[]);
        assert_eq!(render(&command(), &again.unwrap()), text);
    }
}
