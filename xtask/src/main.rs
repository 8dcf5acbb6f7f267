//! `cargo xtask test | lab | bench | build-ebpf | dist | ci`: the project's entry points.
//! Each one installs the Debian packages it needs when run as root, and otherwise says
//! exactly which `apt-get install` to run.

mod dist;

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A command we need and the Debian package that provides it.
struct Need {
    command: &'static str,
    package: &'static str,
}

/// What the test suite needs beyond the Rust toolchain.
const TEST_NEEDS: &[Need] = &[
    Need {
        command: "ip",
        package: "iproute2",
    },
    Need {
        command: "ping",
        package: "iputils-ping",
    },
    Need {
        command: "setpriv",
        package: "util-linux",
    },
    Need {
        command: "mariadbd",
        package: "mariadb-server",
    },
    Need {
        command: "mariadb",
        package: "mariadb-client",
    },
    // The agent's eBPF probe (agent/build.rs).
    Need {
        command: "clang-19",
        package: "clang-19",
    },
    Need {
        command: "llvm-strip-19",
        package: "llvm-19",
    },
    Need {
        command: "/usr/include/bpf/bpf_helpers.h",
        package: "libbpf-dev",
    },
    // The monitor fleet: etcd-client compiles etcd's protos at build time (protoc and
    // the well-known types), and the fleet tests start a real etcd cluster.
    Need {
        command: "protoc",
        package: "protobuf-compiler",
    },
    Need {
        command: "/usr/include/google/protobuf/descriptor.proto",
        package: "libprotobuf-dev",
    },
    Need {
        command: "etcd",
        package: "etcd-server",
    },
    Need {
        command: "etcdctl",
        package: "etcd-client",
    },
    // Certificates for the TLS tests (to etcd, to MySQL).
    Need {
        command: "openssl",
        package: "openssl",
    },
    // The live page's test loads it in Debian's headless Chromium.
    Need {
        command: "chromium",
        package: "chromium",
    },
    // The agent's health checks' test routes writes through Debian's HAProxy.
    Need {
        command: "haproxy",
        package: "haproxy",
    },
    // The packages' test (tests/tests/dist.rs); building them: DIST_NEEDS.
    Need {
        command: "lintian",
        package: "lintian",
    },
];

/// What `cargo xtask dist` needs beyond the Rust toolchain and the probe's compiler.
const DIST_NEEDS: &[Need] = &[
    Need {
        command: "dpkg-shlibdeps",
        package: "dpkg-dev",
    },
    Need {
        command: "strip",
        package: "binutils",
    },
];

/// The failover bench's plot: Debian's matplotlib for Debian's python3 (a python3 earlier
/// in PATH, e.g. pyenv's, would not see it, so the plot runs /usr/bin/python3).
const PLOT_NEEDS: &[Need] = &[Need {
    command: "/usr/lib/python3/dist-packages/matplotlib/__init__.py",
    package: "python3-matplotlib",
}];

/// The fleet bench reads etcd's /metrics with curl.
const FLEET_BENCH_NEEDS: &[Need] = &[Need {
    command: "curl",
    package: "curl",
}];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    std::env::set_current_dir(&root).with_context(|| format!("entering {}", root.display()))?;
    match args.first().map(String::as_str) {
        Some("test") | Some("ci") => test(),
        Some("lab") => lab(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("build-ebpf") => build_ebpf(),
        Some("dist") => {
            ensure(TEST_NEEDS)?;
            ensure(DIST_NEEDS)?;
            dist::dist().map(|_| ())
        }
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\n  test        fmt check, clippy -D warnings, every test (the README's test command)\n  \
                 ci          the same as test (what .ci/run calls)\n  lab         build and show the system (the README's first command)\n  \
                 lab --fleet the same with a monitor fleet: 3 etcd members, 2 monitors; the leading monitor is killed, then the writer\n  \
                 bench [protocol|core|monitor|probe|agent|chaos|failover|fleet|install]  measurements, written to target/bench/\n              \
                 (MMM_BENCH_ROUNDS, MMM_BENCH_SCENARIOS; fleet's groups: monitor = leader-kill9,leader-frozen,leader-sigterm,\n              \
                 etcd = etcd-leader-kill9,etcd-follower-kill9,etcd-majority-lost,etcd-writer-cut; default both)\n  build-ebpf  compile the BPF programs\n  \
                 dist        Debian packages mmm-agent and mmm-monitor in target/dist/"
            );
            bail!("no command given")
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the effective user of this process.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn have(command: &str) -> bool {
    if command.starts_with('/') {
        return Path::new(command).exists();
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(command).is_file()))
        .unwrap_or(false)
}

/// Installs missing packages as root; otherwise names the exact command to run.
fn ensure(needs: &[Need]) -> Result<()> {
    let missing: Vec<&str> = needs
        .iter()
        .filter(|n| !have(n.command))
        .map(|n| n.package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    if !is_root() {
        bail!("missing packages: {list}\nrun as root, or install them with:\n  sudo apt-get update && sudo apt-get install -y {list}");
    }
    eprintln!("xtask: installing {list}");
    run(Command::new("apt-get").arg("update").arg("-q"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    Ok(())
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: {}", describe(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("starting {}", describe(cmd)))?;
    if !status.success() {
        bail!("{} failed ({status})", describe(cmd));
    }
    Ok(())
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The workspace's target directory (respects CARGO_TARGET_DIR).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"))
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn test() -> Result<()> {
    ensure(TEST_NEEDS)?;
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--locked",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The integration tests drive the real binaries: build them first, and the
    // packages (tests/tests/dist.rs installs them).
    run(cargo().args(["build", "--workspace", "--bins", "--locked"]))?;
    ensure(DIST_NEEDS)?;
    dist::dist()?;
    // Every test binary runs even after one fails: one run shows every failure.
    run(cargo().args(["test", "--workspace", "--locked", "--no-fail-fast"]))?;
    Ok(())
}

/// Compiles the probe (agent/build.rs does the work) and says where the object is.
fn build_ebpf() -> Result<()> {
    ensure(TEST_NEEDS)?;
    run(cargo().args(["build", "--locked", "-p", "mmm-agent"]))?;
    let out = std::fs::read_dir("target/debug/build")?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("out/probe.bpf.o"))
        .filter(|p| p.exists())
        .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    match out {
        Some(p) => println!("probe object: {}", p.display()),
        None => bail!("agent/build.rs ran but no probe.bpf.o was found under target/debug/build"),
    }
    Ok(())
}

fn lab(args: &[String]) -> Result<()> {
    ensure(TEST_NEEDS)?;
    if !is_root() {
        bail!("the lab creates network namespaces and runs MariaDB: run `cargo xtask lab` as root");
    }
    run(cargo().args(["build", "--workspace", "--bins", "--locked"]))?;
    // The lab tears itself down on success, failure and Ctrl-C (--keep: on Ctrl-C).
    // --fleet: the monitor fleet (etcd members and two monitors) instead of one monitor.
    run(Command::new(target_dir().join("debug/mmm-lab")).args(args))
}

fn bench(args: &[String]) -> Result<()> {
    let which = args.first().map(String::as_str).unwrap_or("all");
    let protocol = || {
        run(cargo().args([
            "bench",
            "--locked",
            "-p",
            "mmm-common",
            "--bench",
            "protocol",
        ]))
    };
    let agent = || -> Result<()> {
        ensure(TEST_NEEDS)?;
        run(cargo().args(["build", "--release", "--locked", "--bins"]))?;
        run(cargo()
            .args(["bench", "--locked", "-p", "mmm-tests", "--bench", "agent"])
            .env("MMM_BIN_PROFILE", "release"))
    };
    let core = || run(cargo().args(["bench", "--locked", "-p", "mmm-monitor", "--bench", "core"]));
    let probe = || -> Result<()> {
        ensure(TEST_NEEDS)?;
        run(cargo().args(["build", "--release", "--locked", "--bins"]))?;
        run(cargo()
            .args(["bench", "--locked", "-p", "mmm-tests", "--bench", "probe"])
            .env("MMM_BIN_PROFILE", "release"))
    };
    let failover = || -> Result<()> {
        ensure(TEST_NEEDS)?;
        ensure(PLOT_NEEDS)?;
        run(cargo().args(["build", "--release", "--locked", "--bins"]))?;
        run(cargo()
            .args([
                "bench",
                "--locked",
                "-p",
                "mmm-tests",
                "--bench",
                "failover",
            ])
            .env("MMM_BIN_PROFILE", "release"))?;
        run(Command::new("/usr/bin/python3").args([
            "tests/benches/plot_failover.py",
            "target/bench/report.json",
            "target/bench/failover.png",
        ]))
    };
    let chaos = || -> Result<()> {
        ensure(TEST_NEEDS)?;
        run(cargo().args(["build", "--release", "--locked", "--bins"]))?;
        run(cargo()
            .args(["bench", "--locked", "-p", "mmm-tests", "--bench", "chaos"])
            .env("MMM_BIN_PROFILE", "release"))?;
        // The hung-then-woken writer (issue 22): two writers, two VIPs, failover.
        run(cargo()
            .args(["bench", "--locked", "-p", "mmm-tests", "--bench", "hung"])
            .env("MMM_BIN_PROFILE", "release"))
    };
    let fleet = || -> Result<()> {
        ensure(TEST_NEEDS)?;
        ensure(FLEET_BENCH_NEEDS)?;
        run(cargo().args(["build", "--release", "--locked", "--bins"]))?;
        run(cargo()
            .args(["bench", "--locked", "-p", "mmm-tests", "--bench", "fleet"])
            .env("MMM_BIN_PROFILE", "release"))
    };
    // From dpkg -i of freshly built packages to the first failover; the build is timed
    // apart (an operator downloads the packages).
    let install = || -> Result<()> {
        ensure(TEST_NEEDS)?;
        ensure(DIST_NEEDS)?;
        let built = std::time::Instant::now();
        dist::dist()?;
        let dist_ms = built.elapsed().as_millis().to_string();
        run(cargo()
            .args(["bench", "--locked", "-p", "mmm-tests", "--bench", "install"])
            .env("MMM_BIN_PROFILE", "release")
            .env("MMM_BENCH_DIST_MS", dist_ms))
    };
    let monitor = || -> Result<()> {
        run(cargo().args(["build", "--release", "--locked", "--bins"]))?;
        run(cargo()
            .args(["bench", "--locked", "-p", "mmm-tests", "--bench", "monitor"])
            .env("MMM_BIN_PROFILE", "release"))
    };
    match which {
        "protocol" => protocol(),
        "core" => core(),
        "monitor" => monitor(),
        "probe" => probe(),
        "failover" => failover(),
        "agent" => agent(),
        "chaos" => chaos(),
        "fleet" => fleet(),
        "install" => install(),
        "all" => {
            protocol()?;
            core()?;
            monitor()?;
            probe()?;
            agent()?;
            chaos()?;
            fleet()?;
            install()?;
            failover()
        }
        other => {
            bail!("unknown benchmark {other:?} (known: protocol, core, monitor, probe, agent, chaos, failover, fleet, install)")
        }
    }
}
