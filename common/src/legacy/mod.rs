//! Import of MySQL-MMM 2.2.1 configurations (`mmm-control import-mmm`).
//!
//! MMM's format (lib/Common/Config.pm of 2.2.1): `key value` lines, `#` comment lines
//! (MMM knew only whole-line comments: a `#` inside a word, as in a password, is part
//! of the value; one after a blank starts a comment here, with a warning),
//! `include FILE`, sections `<host default>`, `<host NAME>`, `<role NAME>`, `<monitor>`,
//! `<check NAME>`, `<socket>`, `<copy_method NAME>` closed by `</host>` etc., empty
//! sections as `<socket/>` or `<check mysql/>`, lists separated by commas (and, here,
//! spaces), booleans as 0/1, yes/no, on/off, true/false, and durations as integer
//! seconds. A section opened twice (as `<host default>` usually is, once per file) is
//! merged, later keys winning, as MMM did.
//!
//! Every option MMM 2.2.1 accepts imports into a config that passes validation: options
//! mmm has no use for (mmm-tools, pid files, SSL sockets) are dropped with a warning
//! naming the file and line they came from, as is every option mapped differently.
//! MMM's status file is read by [`status::parse`].

mod convert;
mod read;
pub mod status;

use convert::Converter;
use read::Mmm;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{at}: {problem}")]
    Syntax { at: String, problem: String },
    #[error("{at}: include nests deeper than {max} files (an include loop?)", max = MAX_INCLUDE_DEPTH)]
    IncludeDepth { at: String },
}

const MAX_INCLUDE_DEPTH: usize = 8;

/// The result of an import: TOML text and the warnings to show the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    pub toml: String,
    pub warnings: Vec<String>,
}

/// Reads MMM config files (each may `include` others) and converts them.
pub fn import(files: &[PathBuf]) -> Result<Import, ImportError> {
    let mut mmm = Mmm::default();
    for f in files {
        let mut open = None;
        mmm.read(f, 0, &mut open)?;
        if let Some((k, n, at)) = open {
            return Err(ImportError::Syntax {
                at: at.to_string(),
                problem: format!("<{k} {n}> is never closed"),
            });
        }
    }
    Converter::new(std::mem::take(&mut mmm.warnings)).convert(&mmm)
}

#[cfg(test)]
mod tests;
