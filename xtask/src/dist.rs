//! `cargo xtask dist`: the Debian packages `mmm-agent` and `mmm-monitor` (with
//! `mmm-control`) in target/dist/, from a release build and conf/, with dpkg-deb alone:
//! no debhelper, no network.
//!
//! What the packages do, and why:
//! - binaries in /usr/bin (stripped, as dh_strip would), the units of conf/systemd in
//!   /lib/systemd/system, plain and `@NAME` templates, as they are in the repository;
//! - postinst creates the `mmm` system user (the agent's also adds it to mysqld's group
//!   where that exists, for `mysql_pid_file` and a 0660 socket directory) and says what
//!   to do next; it enables and starts nothing, since no service can run before its
//!   config is written;
//! - conffiles: /etc/mmm/mmm.toml.example (monitor: the config is written on the
//!   monitor's host first, then copied to every database host) and
//!   /etc/default/mmm-agent (agent: MMM_HOST); one file may belong to one package
//!   only, so the agent's copy of the example is under /usr/share/doc;
//! - the monitor's ICMP checks use unprivileged ping sockets: /usr/lib/sysctl.d allows
//!   them (the range systemd's own 50-default.conf sets where it ships);
//! - the runtime directory /run/mmm is the units' RuntimeDirectory=, so no package
//!   file; the monitor's /var/lib/mmm is its StateDirectory=, removed on purge.
//!
//! Lintian's remaining tags are overridden in usr/share/lintian/overrides, each with
//! the reason above it (see `lintian_overrides`).

use crate::{run, workspace_root};
use anyhow::{bail, Context, Result};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const MAINTAINER: &str = "mmm developers <mmm-dev@example.org>";
/// The package revision under the workspace's version.
const DEBIAN_REVISION: &str = "1";

/// One binary package.
struct Package {
    name: &'static str,
    summary: &'static str,
    description: &'static str,
    binaries: &'static [&'static str],
    /// Units under conf/systemd.
    units: &'static [&'static str],
    /// (path in the package, contents, mode); those under etc/ are conffiles.
    files: Vec<(&'static str, String, u32)>,
    postinst: String,
    postrm: String,
    prerm: String,
}

/// Lintian tags that remain, with the reason for each (lintian reads `#` lines as
/// comments), for package `p`.
fn lintian_overrides(p: &Package) -> String {
    let mut out = String::from(
        "# Man pages come with the clap-generated ones (issue 23 item 6); until then\n\
         # `--help` and docs/operations.md are the reference.\n",
    );
    for b in p.binaries {
        out.push_str(&format!("{}: no-manual-page [usr/bin/{b}]\n", p.name));
    }
    out.push_str(&format!(
        "# Built from the repository for its operators, not uploaded to Debian: there is\n\
         # no ITP bug to close.\n\
         {}: initial-upload-closes-no-bugs [usr/share/doc/{}/changelog.Debian.gz:1]\n",
        p.name, p.name
    ));
    out
}

fn packages() -> Result<Vec<Package>> {
    let root = workspace_root();
    let example =
        fs::read_to_string(root.join("conf/mmm.toml")).context("reading conf/mmm.toml")?;
    let agent_default = "\
# The name of this host in /etc/mmm/mmm.toml ([hosts.NAME], MMM's `this`), read by
# mmm-agent.service. Each further cluster on this host (mmm-agent@NAME.service) reads
# /etc/default/mmm-agent-NAME instead.
#MMM_HOST=db1
"
    .to_string();
    let sysctl = "\
# mmm-monitor's ICMP checks use unprivileged ping sockets (no CAP_NET_RAW): allow every
# group, as systemd's 50-default.conf does where it ships. Override it in
# /etc/sysctl.d (e.g. the mmm group's gid alone: `getent group mmm`).
net.ipv4.ping_group_range = 0 2147483647
"
    .to_string();
    Ok(vec![
        Package {
            name: "mmm-agent",
            summary: "MySQL/MariaDB multi-master replication manager - agent",
            description: "The agent of mmm runs on each database host: it adds and removes the\n \
                          virtual IPs the monitor assigns, sends gratuitous ARP, toggles read_only,\n \
                          re-points replication and watches mysqld with an eBPF probe, so a crash\n \
                          is reported within milliseconds. mmm replaces MySQL-MMM 2.2.1.",
            binaries: &["mmm-agent"],
            units: &["mmm-agent.service", "mmm-agent@.service"],
            files: vec![
                ("etc/default/mmm-agent", agent_default, 0o644),
                (
                    "usr/share/doc/mmm-agent/examples/mmm.toml",
                    example.clone(),
                    0o644,
                ),
            ],
            postinst: postinst(
                "mmm-agent",
                AGENT_POSTINST_EXTRA,
                AGENT_NEXT_STEPS,
            ),
            prerm: prerm("mmm-agent"),
            postrm: postrm("mmm-agent", ""),
        },
        Package {
            name: "mmm-monitor",
            summary: "MySQL/MariaDB multi-master replication manager - monitor",
            description: "The monitor of mmm checks a master-master pair of MySQL or MariaDB\n \
                          servers and their slaves and moves the writer and reader roles\n \
                          between them through the agents. mmm-control drives it with\n \
                          MySQL-MMM's commands; it also imports an MMM 2.2.1 configuration\n \
                          and checks a cluster before it is trusted.",
            binaries: &["mmm-monitor", "mmm-control"],
            units: &["mmm-monitor.service", "mmm-monitor@.service"],
            files: vec![
                ("etc/mmm/mmm.toml.example", example, 0o644),
                ("usr/lib/sysctl.d/60-mmm-monitor.conf", sysctl, 0o644),
            ],
            postinst: postinst(
                "mmm-monitor",
                MONITOR_POSTINST_EXTRA,
                MONITOR_NEXT_STEPS,
            ),
            prerm: prerm("mmm-monitor"),
            // The status file is the monitor's own state (StateDirectory=mmm).
            postrm: postrm("mmm-monitor", "    rm -rf /var/lib/mmm\n"),
        },
    ])
}

const COPYRIGHT: &str = "\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: mmm

Files: *
Copyright: 2026 the mmm developers
License: GPL-2+
 This program is free software; you can redistribute it and/or modify it under
 the terms of the GNU General Public License as published by the Free Software
 Foundation; either version 2 of the License, or (at your option) any later
 version.
 .
 On Debian systems, the full text of the GNU General Public License version 2
 can be found in /usr/share/common-licenses/GPL-2.
";

const AGENT_POSTINST_EXTRA: &str = r#"    # mysqld's group, where it exists: mysql_pid_file (0660) and a socket directory
    # closed to others. The probe finds mysqld without it.
    if getent group mysql >/dev/null && ! id -nG mmm | tr ' ' '\n' | grep -qx mysql; then
        adduser --quiet mmm mysql
    fi
"#;

const MONITOR_POSTINST_EXTRA: &str = r#"    # Unprivileged ICMP for the ping check, now (systemd-sysctl applies it at boot).
    sysctl -q -p /usr/lib/sysctl.d/60-mmm-monitor.conf >/dev/null 2>&1 ||
        echo "mmm-monitor: could not apply /usr/lib/sysctl.d/60-mmm-monitor.conf now (a container?); it applies at boot" >&2
"#;

const AGENT_NEXT_STEPS: &str = "\
mmm-agent is installed; nothing was started. Next:
  1. Copy /etc/mmm/mmm.toml and its key files from the monitor host
     (mode 0600, owner mmm: chown mmm:mmm /etc/mmm/*).
  2. Name this host: MMM_HOST=db1 in /etc/default/mmm-agent.
  3. systemctl enable --now mmm-agent; journalctl -u mmm-agent says what it refuses.
See /usr/share/doc/mmm-agent/examples/mmm.toml.";

const MONITOR_NEXT_STEPS: &str = "\
mmm-monitor is installed; nothing was started. Next:
  1. install -m 0600 -o mmm -g mmm /etc/mmm/mmm.toml.example /etc/mmm/mmm.toml
     and edit it (from MMM 2.2.1: mmm-control import-mmm /etc/mysql-mmm/mmm_common.conf
     /etc/mysql-mmm/mmm_mon.conf > /etc/mmm/mmm.toml, then chmod 0600, chown mmm).
  2. mmm-control gen-key > /etc/mmm/cluster.key; chmod 600 /etc/mmm/cluster.key;
     chown mmm:mmm /etc/mmm/cluster.key
  3. mmm-monitor --check-config /etc/mmm/mmm.toml; mmm-control check-cluster
  4. systemctl enable --now mmm-monitor, then mmm-control set_online each host.";

fn postinst(name: &str, extra: &str, next: &str) -> String {
    format!(
        r#"#!/bin/sh
# {name}: creates the mmm system user and says what to do next. It enables and starts
# no service: none can run before its config is written.
set -e

if [ "$1" = configure ]; then
    if ! getent passwd mmm >/dev/null; then
        adduser --quiet --system --group --no-create-home --home /nonexistent \
            --gecos "mmm replication manager" mmm
    fi
{extra}    if [ -z "$2" ]; then
        cat <<'EOF'
{next}
EOF
    else
        echo "{name} upgraded from $2: running units keep the old binary until restarted (one host at a time; see docs/operations.md)."
    fi
fi

exit 0
"#
    )
}

fn prerm(name: &str) -> String {
    format!(
        r#"#!/bin/sh
# {name}: a removed package's service stops; an upgrade restarts nothing (agents and
# monitors are restarted one host at a time, by the operator).
set -e

if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    deb-systemd-invoke stop {name}.service >/dev/null || true
fi

exit 0
"#
    )
}

fn postrm(name: &str, purge_extra: &str) -> String {
    format!(
        r#"#!/bin/sh
# {name}: on purge, forgets the unit's enablement and removes the package's own state.
# The mmm user stays (Debian's practice: files it owned may remain), and so do the
# operator's files in /etc/mmm (config, keys).
set -e

if [ "$1" = purge ]; then
    if command -v deb-systemd-helper >/dev/null; then
        deb-systemd-helper purge {name}.service >/dev/null || true
    fi
{purge_extra}fi

exit 0
"#
    )
}

/// `cargo xtask dist`: builds the release binaries and both packages; prints their paths.
pub fn dist() -> Result<Vec<PathBuf>> {
    run(crate::cargo().args([
        "build",
        "--release",
        "--locked",
        "-p",
        "mmm-agent",
        "-p",
        "mmm-monitor",
        "--bins",
    ]))?;
    // Absolute: dpkg-shlibdeps runs in another directory.
    let target = workspace_root().join(crate::target_dir());
    let out = target.join("dist");
    let version = format!("{}-{DEBIAN_REVISION}", env!("CARGO_PKG_VERSION"));
    let arch = capture(Command::new("dpkg").arg("--print-architecture"))?;
    let mut built = Vec::new();
    for p in packages()? {
        let stage = out.join("build").join(p.name);
        if stage.exists() {
            fs::remove_dir_all(&stage).with_context(|| format!("clearing {}", stage.display()))?;
        }
        for bin in p.binaries {
            let dest = stage.join("usr/bin").join(bin);
            mkdir(dest.parent().expect("usr/bin"))?;
            // dh_strip's options for executables.
            run(Command::new("strip")
                .args([
                    "--remove-section=.comment",
                    "--remove-section=.note",
                    "--strip-unneeded",
                    "-o",
                ])
                .arg(&dest)
                .arg(target.join("release").join(bin)))?;
            chmod(&dest, 0o755)?;
        }
        for unit in p.units {
            let text = fs::read_to_string(workspace_root().join("conf/systemd").join(unit))
                .with_context(|| format!("reading conf/systemd/{unit}"))?;
            write(&stage.join("lib/systemd/system").join(unit), &text, 0o644)?;
        }
        for (path, text, mode) in &p.files {
            write(&stage.join(path), text, *mode)?;
        }
        // Both packages own the directory the config is copied into (a directory may
        // belong to several packages; a file to one).
        mkdir(&stage.join("etc/mmm"))?;
        let doc = stage.join("usr/share/doc").join(p.name);
        write(&doc.join("copyright"), COPYRIGHT, 0o644)?;
        write_gz(&doc.join("changelog.Debian.gz"), &changelog(&version)?)?;
        write(
            &stage.join("usr/share/lintian/overrides").join(p.name),
            &lintian_overrides(&p),
            0o644,
        )?;
        let debian = stage.join("DEBIAN");
        let conffiles: String = p
            .files
            .iter()
            .filter(|(path, _, _)| path.starts_with("etc/"))
            .map(|(path, _, _)| format!("/{path}\n"))
            .collect();
        write(&debian.join("conffiles"), &conffiles, 0o644)?;
        write(&debian.join("postinst"), &p.postinst, 0o755)?;
        write(&debian.join("prerm"), &p.prerm, 0o755)?;
        write(&debian.join("postrm"), &p.postrm, 0o755)?;
        write(&debian.join("md5sums"), &md5sums(&stage)?, 0o644)?;
        let depends = shlibs_depends(&out, &stage, p.binaries)?;
        let control = format!(
            "Package: {}\nVersion: {version}\nArchitecture: {arch}\nMaintainer: {MAINTAINER}\n\
             Installed-Size: {}\nDepends: {depends}, adduser\nSection: admin\nPriority: optional\n\
             Description: {}\n {}\n",
            p.name,
            installed_size_kib(&stage)?,
            p.summary,
            p.description
        );
        write(&debian.join("control"), &control, 0o644)?;
        let deb = out.join(format!("{}_{version}_{arch}.deb", p.name));
        run(Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&stage)
            .arg(&deb))?;
        built.push(deb);
    }
    for deb in &built {
        println!("{}", deb.display());
    }
    Ok(built)
}

/// The Debian changelog: one entry naming the revision the package was built from.
fn changelog(version: &str) -> Result<String> {
    let git = |args: &[&str]| capture(Command::new("git").args(args).current_dir(workspace_root()));
    let revision = git(&["rev-parse", "--short", "HEAD"])?;
    let date = git(&["log", "-1", "--format=%aD"])?;
    Ok(format!(
        "mmm ({version}) unstable; urgency=medium\n\n  * Built by cargo xtask dist from revision {revision}.\n\n -- {MAINTAINER}  {date}\n"
    ))
}

/// `Depends` for the binaries' shared libraries, as dpkg-shlibdeps computes it (it
/// wants a debian/control to read, so one is made beside the staging trees).
fn shlibs_depends(out: &Path, stage: &Path, binaries: &[&str]) -> Result<String> {
    let work = out.join("build/shlibs");
    write(
        &work.join("debian/control"),
        "Source: mmm\n\nPackage: mmm\nArchitecture: any\n",
        0o644,
    )?;
    let mut cmd = Command::new("dpkg-shlibdeps");
    cmd.arg("-O").current_dir(&work);
    for b in binaries {
        cmd.arg(format!("-e{}", stage.join("usr/bin").join(b).display()));
    }
    let line = capture(&mut cmd)?;
    match line.strip_prefix("shlibs:Depends=") {
        Some(d) => Ok(d.to_string()),
        None => bail!("dpkg-shlibdeps said {line:?}"),
    }
}

/// DEBIAN/md5sums: every file of the package but DEBIAN/, as `md5sum` prints them.
fn md5sums(stage: &Path) -> Result<String> {
    let mut files = Vec::new();
    let mut stack = vec![stage.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let e = e?;
            if e.file_type()?.is_dir() {
                if e.file_name() != "DEBIAN" {
                    stack.push(e.path());
                }
            } else {
                let path = e.path();
                files.push(path.strip_prefix(stage)?.to_path_buf());
            }
        }
    }
    files.sort();
    capture(Command::new("md5sum").args(&files).current_dir(stage)).map(|s| s + "\n")
}

fn installed_size_kib(dir: &Path) -> Result<u64> {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let e = e?;
            if e.file_name() == "DEBIAN" {
                continue;
            }
            let m = e.metadata()?;
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.len().div_ceil(1024);
            }
        }
    }
    Ok(total)
}

fn capture(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("starting {}", crate::describe(cmd)))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            crate::describe(cmd),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn mkdir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    chmod(dir, 0o755)
}

fn chmod(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

fn write(path: &Path, text: &str, mode: u32) -> Result<()> {
    let mut dir = path.parent();
    // Every directory in the package 0755, whatever the umask.
    let mut dirs = Vec::new();
    while let Some(d) = dir.filter(|d| !d.exists()) {
        dirs.push(d.to_path_buf());
        dir = d.parent();
    }
    for d in dirs.iter().rev() {
        mkdir(d)?;
    }
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    chmod(path, mode)
}

/// gzip -9n, as Debian wants compressed changelogs (no name, no time stamp).
fn write_gz(path: &Path, text: &str) -> Result<()> {
    let plain = path.with_extension("");
    write(&plain, text, 0o644)?;
    run(Command::new("gzip").args(["-9nf"]).arg(&plain))?;
    chmod(path, 0o644)
}
