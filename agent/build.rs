//! Compiles the agent's BPF programs (agent-ebpf/src/probe.bpf.c, the liveness probe, and
//! agent-ebpf/src/rst.bpf.c, the RST answer for a released VIP) with clang-19 into
//! OUT_DIR, strips DWARF (keeping BTF, which aya needs), and fails with the exact packages
//! to install when the toolchain is missing: an agent silently built without them must
//! not happen.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let ebpf = manifest.join("../agent-ebpf");
    for f in [
        ebpf.join("include/probe.h"),
        ebpf.join("include/rst.h"),
        ebpf.join("include/vmlinux.h"),
    ] {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    println!("cargo:rerun-if-env-changed=CLANG");
    // The liveness probe, and the tc program that answers a released VIP with RST.
    for program in ["probe", "rst"] {
        build(&ebpf, program);
    }
}

fn build(ebpf: &std::path::Path, program: &str) {
    let src = ebpf.join(format!("src/{program}.bpf.c"));
    println!("cargo:rerun-if-changed={}", src.display());
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join(format!("{program}.bpf.o"));
    let clang = std::env::var("CLANG").unwrap_or_else(|_unset| "clang-19".into());
    let missing = |tool: &str, e: std::io::Error| -> ! {
        panic!(
            "building the agent's eBPF programs needs {tool} ({e}): apt-get install clang-19 llvm-19 libbpf-dev \
             (cargo xtask test and cargo xtask lab install them when run as root)"
        )
    };
    let status = Command::new(&clang)
        .args([
            "-O2",
            "-g",
            "-target",
            "bpf",
            "-D__TARGET_ARCH_x86",
            "-Wall",
            "-Werror",
        ])
        .arg(format!("-I{}", ebpf.join("include").display()))
        .arg("-c")
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .status()
        .unwrap_or_else(|e| missing(&clang, e));
    assert!(
        status.success(),
        "{clang} failed to compile {} (see above)",
        src.display()
    );
    let status = Command::new("llvm-strip-19")
        .args(["-g"])
        .arg(&out)
        .status()
        .unwrap_or_else(|e| missing("llvm-strip-19", e));
    assert!(
        status.success(),
        "llvm-strip-19 failed on {}",
        out.display()
    );
}
