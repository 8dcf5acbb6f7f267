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
pub enum Command {
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

/// One line per command, as `help` prints it (MMM's layout, our additions at the end).
pub const HELP: &str = "\
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
";

impl Command {
    pub fn parse<S: AsRef<str>>(words: &[S]) -> Result<Command, CommandError> {
        let words: Vec<&str> = words.iter().map(AsRef::as_ref).collect();
        let Some((&name, args)) = words.split_first() else {
            return Err(CommandError::Empty);
        };
        let usage =
            |command: &'static str, usage: &'static str| CommandError::Usage { command, usage };
        let no_args = |cmd: Command, command: &'static str| {
            if args.is_empty() {
                Ok(cmd)
            } else {
                Err(usage(command, command))
            }
        };
        match name {
            "help" => no_args(Command::Help, "help"),
            "ping" => no_args(Command::Ping, "ping"),
            "mode" => no_args(Command::Mode, "mode"),
            "set_active" => no_args(Command::SetActive, "set_active"),
            "set_manual" => no_args(Command::SetManual, "set_manual"),
            "set_passive" => no_args(Command::SetPassive, "set_passive"),
            "show" => match args {
                [] => Ok(Command::Show { json: false }),
                ["--json"] => Ok(Command::Show { json: true }),
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
                    [] => Ok(Command::Checks {
                        host: None,
                        check: CheckSelector::All,
                    }),
                    [h] => Ok(Command::Checks {
                        host: host(h),
                        check: CheckSelector::All,
                    }),
                    [h, c] => Ok(Command::Checks {
                        host: host(h),
                        check: check(c)?,
                    }),
                    _ => Err(usage("checks", "checks [<host>|all [<check>|all]]")),
                }
            }
            "set_online" | "set_offline" => match args {
                [h] => Ok(if name == "set_online" {
                    Command::SetOnline {
                        host: h.to_string(),
                    }
                } else {
                    Command::SetOffline {
                        host: h.to_string(),
                    }
                }),
                _ if name == "set_online" => Err(usage("set_online", "set_online <host>")),
                _ => Err(usage("set_offline", "set_offline <host>")),
            },
            "move_role" => match args {
                ["--force", role, host] => Ok(Command::MoveRole {
                    force: true,
                    role: role.to_string(),
                    host: host.to_string(),
                }),
                [role, host] if !role.starts_with("--") => Ok(Command::MoveRole {
                    force: false,
                    role: role.to_string(),
                    host: host.to_string(),
                }),
                _ => Err(usage("move_role", "move_role [--force] <role> <host>")),
            },
            "set_ip" => match args {
                [ip, host] => Ok(Command::SetIp {
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
impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Help => f.write_str("help"),
            Command::Ping => f.write_str("ping"),
            Command::Show { json: false } => f.write_str("show"),
            Command::Show { json: true } => f.write_str("show --json"),
            Command::Checks { host, check } => {
                write!(f, "checks {}", host.as_deref().unwrap_or("all"))?;
                match check {
                    CheckSelector::All => f.write_str(" all"),
                    CheckSelector::One(c) => write!(f, " {c}"),
                }
            }
            Command::Mode => f.write_str("mode"),
            Command::SetOnline { host } => write!(f, "set_online {host}"),
            Command::SetOffline { host } => write!(f, "set_offline {host}"),
            Command::MoveRole { force, role, host } => {
                write!(
                    f,
                    "move_role {}{role} {host}",
                    if *force { "--force " } else { "" }
                )
            }
            Command::SetIp { ip, host } => write!(f, "set_ip {ip} {host}"),
            Command::SetActive => f.write_str("set_active"),
            Command::SetManual => f.write_str("set_manual"),
            Command::SetPassive => f.write_str("set_passive"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(line: &str) -> Result<Command, CommandError> {
        Command::parse(&line.split_whitespace().collect::<Vec<_>>())
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
            let _ = Command::parse(&words);
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
            Ok(Command::Checks {
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
