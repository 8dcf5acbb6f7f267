//! MMM's control commands, parsed once for both `mmm-control` and the daemon.

use mmm_common::types::CheckKind;
use std::fmt;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckSelector {
    All,
    One(CheckKind),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlCommand {
    Help,
    Ping,
    Show {
        json: bool,
    },
    /// `checks [HOST|all [CHECK|all]]`; `None` host means all.
    Checks {
        host: Option<String>,
        check: CheckSelector,
    },
    Mode,
    SetOnline {
        host: String,
    },
    SetOffline {
        host: String,
    },
    MoveRole {
        force: bool,
        role: String,
        host: String,
    },
    SetIp {
        ip: Ipv4Addr,
        host: String,
    },
    SetActive,
    SetManual,
    SetPassive,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("no command given")]
    Empty,
    #[error("Unknown command '{0}'")]
    Unknown(String),
    #[error("Wrong arguments for '{command}': usage: {usage}")]
    Usage {
        command: &'static str,
        usage: &'static str,
    },
    #[error("'{got}' is not a check (expected ping, mysql, rep_threads, rep_backlog or all)")]
    BadCheck { got: String },
    #[error("'{got}' is not an IPv4 address")]
    BadIp { got: String },
}

/// Every command the monitor answers, as `help` lists them: (name, arguments, what it
/// does), MMM's order and wording. `ControlCommand::parse` knows exactly these names (tested).
pub const COMMANDS: [(&str, &str, &str); 12] = [
    ("help", "", "show this message"),
    ("ping", "", "ping monitor"),
    ("show", "[--json]", "show status"),
    ("checks", "[<host>|all [<check>|all]]", "show checks status"),
    ("set_online", "<host>", "set host <host> online"),
    ("set_offline", "<host>", "set host <host> offline"),
    ("mode", "", "print current mode."),
    ("set_active", "", "switch into active mode."),
    ("set_manual", "", "switch into manual mode."),
    ("set_passive", "", "switch into passive mode."),
    (
        "move_role",
        "[--force] <role> <host>",
        "move exclusive role <role> to host <host>\n(Only use --force if you know what you are doing!)",
    ),
    ("set_ip", "<ip> <host>", "set role with ip <ip> to host <host>"),
];

/// mmm-control's commands that need no monitor, listed after MMM's by its `help`.
pub const LOCAL_COMMANDS: [(&str, &str, &str); 5] = [
    (
        "check-cluster",
        "",
        "check every configured server\n(grants, GTID, replication, probes)",
    ),
    (
        "import-mmm",
        "<common> <mon> [<agent>]",
        "print the TOML for an MMM 2.2.1 installation",
    ),
    ("gen-key", "", "print a fresh cluster key"),
    (
        "completions",
        "<shell>",
        "print shell completions\n(bash, zsh, fish, elvish, powershell)",
    ),
    ("man", "", "print the man page (roff)"),
];

/// `help`'s text for the monitor's commands: MMM's layout, one line per command.
pub fn help() -> String {
    format!("Valid commands are:\n{}", help_lines(&COMMANDS))
}

/// One line per command in `help`'s layout (`    name args - what`), continuation lines
/// under the description.
pub fn help_lines(commands: &[(&str, &str, &str)]) -> String {
    let mut out = String::new();
    for (name, args, about) in commands {
        let usage = if args.is_empty() {
            name.to_string()
        } else {
            format!("{name} {args}")
        };
        let mut lines = about.lines();
        out.push_str(&format!(
            "    {usage:<33} - {}\n",
            lines.next().unwrap_or_default()
        ));
        for more in lines {
            out.push_str(&format!("{:40}{more}\n", ""));
        }
    }
    out
}

impl ControlCommand {
    pub fn parse<S: AsRef<str>>(words: &[S]) -> Result<ControlCommand, CommandError> {
        let words: Vec<&str> = words.iter().map(AsRef::as_ref).collect();
        let Some((&name, args)) = words.split_first() else {
            return Err(CommandError::Empty);
        };
        let usage =
            |command: &'static str, usage: &'static str| CommandError::Usage { command, usage };
        let no_args = |cmd: ControlCommand, command: &'static str| {
            if args.is_empty() {
                Ok(cmd)
            } else {
                Err(usage(command, command))
            }
        };
        match name {
            "help" => no_args(ControlCommand::Help, "help"),
            "ping" => no_args(ControlCommand::Ping, "ping"),
            "mode" => no_args(ControlCommand::Mode, "mode"),
            "set_active" => no_args(ControlCommand::SetActive, "set_active"),
            "set_manual" => no_args(ControlCommand::SetManual, "set_manual"),
            "set_passive" => no_args(ControlCommand::SetPassive, "set_passive"),
            "show" => match args {
                [] => Ok(ControlCommand::Show { json: false }),
                ["--json"] => Ok(ControlCommand::Show { json: true }),
                _ => Err(usage("show", "show [--json]")),
            },
            "checks" => {
                let check = |s: &str| match s {
                    "all" => Ok(CheckSelector::All),
                    s => s
                        .parse()
                        .map(CheckSelector::One)
                        .map_err(|_unknown| CommandError::BadCheck { got: s.into() }),
                };
                let host = |s: &str| (s != "all").then(|| s.to_string());
                match args {
                    [] => Ok(ControlCommand::Checks {
                        host: None,
                        check: CheckSelector::All,
                    }),
                    [h] => Ok(ControlCommand::Checks {
                        host: host(h),
                        check: CheckSelector::All,
                    }),
                    [h, c] => Ok(ControlCommand::Checks {
                        host: host(h),
                        check: check(c)?,
                    }),
                    _ => Err(usage("checks", "checks [<host>|all [<check>|all]]")),
                }
            }
            "set_online" | "set_offline" => match args {
                [h] => Ok(if name == "set_online" {
                    ControlCommand::SetOnline {
                        host: h.to_string(),
                    }
                } else {
                    ControlCommand::SetOffline {
                        host: h.to_string(),
                    }
                }),
                _ if name == "set_online" => Err(usage("set_online", "set_online <host>")),
                _ => Err(usage("set_offline", "set_offline <host>")),
            },
            "move_role" => match args {
                ["--force", role, host] => Ok(ControlCommand::MoveRole {
                    force: true,
                    role: role.to_string(),
                    host: host.to_string(),
                }),
                [role, host] if !role.starts_with("--") => Ok(ControlCommand::MoveRole {
                    force: false,
                    role: role.to_string(),
                    host: host.to_string(),
                }),
                _ => Err(usage("move_role", "move_role [--force] <role> <host>")),
            },
            "set_ip" => match args {
                [ip, host] => Ok(ControlCommand::SetIp {
                    ip: ip.parse().map_err(|_e| CommandError::BadIp {
                        got: ip.to_string(),
                    })?,
                    host: host.to_string(),
                }),
                _ => Err(usage("set_ip", "set_ip <ip> <host>")),
            },
            other => Err(CommandError::Unknown(other.to_string())),
        }
    }
}

/// The canonical line sent over the control socket; parses back to the same command.
impl fmt::Display for ControlCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlCommand::Help => f.write_str("help"),
            ControlCommand::Ping => f.write_str("ping"),
            ControlCommand::Show { json: false } => f.write_str("show"),
            ControlCommand::Show { json: true } => f.write_str("show --json"),
            ControlCommand::Checks { host, check } => {
                write!(f, "checks {}", host.as_deref().unwrap_or("all"))?;
                match check {
                    CheckSelector::All => f.write_str(" all"),
                    CheckSelector::One(c) => write!(f, " {c}"),
                }
            }
            ControlCommand::Mode => f.write_str("mode"),
            ControlCommand::SetOnline { host } => write!(f, "set_online {host}"),
            ControlCommand::SetOffline { host } => write!(f, "set_offline {host}"),
            ControlCommand::MoveRole { force, role, host } => {
                write!(
                    f,
                    "move_role {}{role} {host}",
                    if *force { "--force " } else { "" }
                )
            }
            ControlCommand::SetIp { ip, host } => write!(f, "set_ip {ip} {host}"),
            ControlCommand::SetActive => f.write_str("set_active"),
            ControlCommand::SetManual => f.write_str("set_manual"),
            ControlCommand::SetPassive => f.write_str("set_passive"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(line: &str) -> Result<ControlCommand, CommandError> {
        ControlCommand::parse(&line.split_whitespace().collect::<Vec<_>>())
    }

    proptest! {
        /// Any line a client can send parses to a command or a named error, never a panic,
        /// and a parsed command prints back to a line that parses to itself.
        #[test]
        fn any_line_parses_or_is_refused(line in "\\PC{0,200}") {
            if let Ok(cmd) = parse(&line) {
                prop_assert_eq!(parse(&cmd.to_string()).ok(), Some(cmd));
            }
        }

        #[test]
        fn command_words_with_any_arguments_never_panic(
            word in prop::sample::select(vec!["ping", "show", "checks", "mode", "set_online",
                "set_offline", "move_role", "set_ip", "set_active", "set_manual", "set_passive", "help"]),
            args in prop::collection::vec("[ -~]{0,20}", 0..5),
        ) {
            let mut words = vec![word.to_string()];
            words.extend(args);
            let _ = ControlCommand::parse(&words);
        }
    }

    /// MMM's `help`, word for word: scripts and operators know it.
    #[test]
    fn help_keeps_mmm_layout() {
        assert_eq!(
            help(),
            "\
Valid commands are:
    help                              - show this message
    ping                              - ping monitor
    show [--json]                     - show status
    checks [<host>|all [<check>|all]] - show checks status
    set_online <host>                 - set host <host> online
    set_offline <host>                - set host <host> offline
    mode                              - print current mode.
    set_active                        - switch into active mode.
    set_manual                        - switch into manual mode.
    set_passive                       - switch into passive mode.
    move_role [--force] <role> <host> - move exclusive role <role> to host <host>
                                        (Only use --force if you know what you are doing!)
    set_ip <ip> <host>                - set role with ip <ip> to host <host>
"
        );
    }

    /// `help` lists every command the parser accepts, and the parser knows every name
    /// `help` lists: a name is in COMMANDS exactly when parse does not call it unknown.
    #[test]
    fn help_lists_every_command_the_parser_accepts() {
        let names: Vec<&str> = COMMANDS.iter().map(|c| c.0).collect();
        for name in &names {
            assert!(
                !matches!(parse(name), Err(CommandError::Unknown(_))),
                "{name} is in help but the parser does not know it"
            );
            assert!(help().contains(&format!("\n    {name}")), "{name}");
        }
        // Every variant, through its canonical line, names a listed command.
        for line in [
            "help",
            "ping",
            "show",
            "checks",
            "mode",
            "set_online a",
            "set_offline a",
            "move_role r h",
            "set_ip 10.0.0.1 h",
            "set_active",
            "set_manual",
            "set_passive",
        ] {
            let cmd = parse(line).expect(line);
            let word = cmd.to_string();
            let word = word.split(' ').next().unwrap_or_default();
            assert!(names.contains(&word), "{word} is not in help");
        }
    }

    proptest! {
        /// Any word the parser does not call unknown is in help.
        #[test]
        fn a_word_the_parser_knows_is_in_help(word in "[a-z_-]{1,12}") {
            if !matches!(parse(&word), Err(CommandError::Unknown(_)) | Err(CommandError::Empty)) {
                prop_assert!(COMMANDS.iter().any(|c| c.0 == word), "{} parses but is not in help", word);
            }
        }
    }

    #[test]
    fn parses_mmm_commands_and_round_trips_them() {
        for line in [
            "help",
            "ping",
            "show",
            "show --json",
            "checks all all",
            "checks db1 all",
            "checks db1 rep_backlog",
            "mode",
            "set_online db2",
            "set_offline db1",
            "move_role writer db2",
            "move_role --force writer db2",
            "set_ip 10.0.0.101 db3",
            "set_active",
            "set_manual",
            "set_passive",
        ] {
            let cmd = parse(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(cmd.to_string(), line);
            assert_eq!(parse(&cmd.to_string()), Ok(cmd));
        }
        assert_eq!(
            parse("checks"),
            Ok(ControlCommand::Checks {
                host: None,
                check: CheckSelector::All
            })
        );
    }

    #[test]
    fn refuses_bad_input_with_a_reason() {
        assert_eq!(parse(""), Err(CommandError::Empty));
        assert_eq!(
            parse("explode").unwrap_err().to_string(),
            "Unknown command 'explode'"
        );
        assert_eq!(
            parse("set_online").unwrap_err().to_string(),
            "Wrong arguments for 'set_online': usage: set_online <host>"
        );
        assert!(matches!(
            parse("move_role --force writer"),
            Err(CommandError::Usage { .. })
        ));
        assert!(matches!(
            parse("move_role --fast writer db1"),
            Err(CommandError::Usage { .. })
        ));
        assert_eq!(
            parse("set_ip 10.0.0.999 db1"),
            Err(CommandError::BadIp {
                got: "10.0.0.999".into()
            })
        );
        assert_eq!(
            parse("checks db1 pong"),
            Err(CommandError::BadCheck { got: "pong".into() })
        );
        assert!(matches!(
            parse("show extra"),
            Err(CommandError::Usage { .. })
        ));
    }
}
