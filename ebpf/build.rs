//! Builds the kernel programs from C with clang (`-target bpf`), so the
//! object always matches the source and the shared header.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const OBJECTS: &[&str] = &["redirect", "reject"];

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".into());
    // asm/types.h lives under the multiarch include directory.
    let arch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("aarch64") => "aarch64-linux-gnu",
        _ => "x86_64-linux-gnu",
    };
    println!("cargo:rerun-if-changed=bpf");
    println!("cargo:rerun-if-env-changed=CLANG");
    for name in OBJECTS {
        let src = format!("bpf/{name}.bpf.c");
        let obj = out.join(format!("{name}.bpf.o"));
        let status = Command::new(&clang)
            .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
            .arg(format!("-I/usr/include/{arch}"))
            .args(["-Ibpf", "-c", &src, "-o"])
            .arg(&obj)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!("clang failed to build {src} ({s}); see its output above"),
            Err(e) => panic!(
                "cannot run `{clang}` to build the eBPF programs ({e}). \
                 They are built from source: apt-get install clang libbpf-dev"
            ),
        }
    }
}
