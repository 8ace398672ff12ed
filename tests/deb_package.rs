//! The Debian package: `cargo deb` (Cargo.toml's `[package.metadata.deb]`) builds
//! `memroute_<version>_amd64.deb`, and this test inspects it with `dpkg-deb`: the binary, the
//! systemd unit and its drop-in, the default config as a conffile, the man page; then runs the
//! packaged binary with the packaged config (its ports swapped for free ones) and serves a get.
//! CI runs `cargo test --release`, so the package then holds the release binary.
//!
//! cargo-deb is not installed by scripts/deps.sh: `cargo install cargo-deb` compiled for 36
//! minutes on this shared two-core machine, too long for CI. Without it the test says so on
//! stderr and passes without checking anything.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Client, Memcached, Memroute};

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

/// Builds the package into a scratch directory; `None` when cargo-deb is not installed.
fn build_package(out_dir: &Path) -> Option<PathBuf> {
    let probe = Command::new(cargo()).args(["deb", "--version"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!(
            "deb_package: skipped, cargo-deb is not installed (`cargo install cargo-deb`; \
             scripts/deps.sh leaves it out because it compiles for minutes)"
        );
        return None;
    }
    // The binary this test run built: a release test run packages it as it is; a debug run
    // packages the debug binary through cargo-deb's --profile.
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_memroute"));
    let profile_dir = exe
        .parent()
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
        .unwrap_or("release");
    let profile = if profile_dir == "debug" {
        "dev"
    } else {
        profile_dir
    };
    run(Command::new(cargo())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "deb",
            "--no-build",
            "--no-strip",
            "--fast",
            "--profile",
            profile,
            "--output",
        ])
        .arg(out_dir));
    let deb = std::fs::read_dir(out_dir)
        .expect("output dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("a .deb in the output dir");
    Some(deb)
}

#[test]
fn deb_package_has_binary_unit_config_and_man_page_and_serves() {
    let dir = common::process::scratch_dir("deb");
    let Some(deb) = build_package(&dir) else {
        return;
    };
    let name = deb.file_name().and_then(|n| n.to_str()).unwrap_or("");
    assert_eq!(
        name,
        format!("memroute_{}_amd64.deb", env!("CARGO_PKG_VERSION"))
    );
    let info = run(Command::new("dpkg-deb").arg("--info").arg(&deb));
    for want in [
        "Package: memroute",
        &format!("Version: {}", env!("CARGO_PKG_VERSION")),
        "Architecture: amd64",
        "Section: net",
    ] {
        assert!(info.lines().any(|l| l.trim() == want), "{want}:\n{info}");
    }
    let package = run(Command::new("dpkg-deb")
        .arg("--field")
        .arg(&deb)
        .arg("Package"));
    assert_eq!(package.trim(), "memroute");
    let control = dir.join("control");
    run(Command::new("dpkg-deb")
        .arg("--control")
        .arg(&deb)
        .arg(&control));
    let conf = std::fs::read_to_string(control.join("conffiles")).expect("conffiles");
    assert!(
        conf.lines().any(|l| l == "/etc/memroute/memroute.toml"),
        "{conf}"
    );
    // The maintainer scripts enable and start the service (cargo-deb's systemd-units).
    let postinst = std::fs::read_to_string(control.join("postinst")).expect("postinst");
    assert!(postinst.contains("memroute.service"), "{postinst}");

    let contents = run(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    for path in [
        "./usr/bin/memroute",
        "./etc/memroute/memroute.toml",
        "./usr/lib/systemd/system/memroute.service",
        "./usr/lib/systemd/system/memroute.service.d/debian.conf",
        "./usr/share/man/man1/memroute.1.gz",
        "./usr/share/doc/memroute/config.example.toml",
    ] {
        assert!(
            contents.lines().any(|l| l.ends_with(path)),
            "{path} missing:\n{contents}"
        );
    }

    let root = dir.join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let bin = root.join("usr/bin/memroute");
    let unit = std::fs::read_to_string(root.join("usr/lib/systemd/system/memroute.service"))
        .expect("unit");
    assert_eq!(
        unit,
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/systemd/memroute.service"
        ))
        .expect("deploy unit"),
        "the packaged unit is deploy/systemd's"
    );
    let dropin =
        std::fs::read_to_string(root.join("usr/lib/systemd/system/memroute.service.d/debian.conf"))
            .expect("drop-in");
    assert!(
        dropin
            .lines()
            .any(|l| l == "ExecStart=/usr/bin/memroute --config /etc/memroute/memroute.toml --log-format json"),
        "{dropin}"
    );
    // Every option of --help is in the man page.
    let help = run(Command::new(&bin).arg("--help"));
    // cargo-deb gzips man pages; the source is the same text.
    let man = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/debian/memroute.1"
    ))
    .expect("man page source");
    let gz = run(Command::new("gzip")
        .arg("-dc")
        .arg(root.join("usr/share/man/man1/memroute.1.gz")));
    assert_eq!(gz, man, "the packaged man page is deploy/debian/memroute.1");
    for option in help
        .split_whitespace()
        .filter(|w| w.starts_with("--"))
        .map(|w| w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()))
    {
        assert!(
            man.contains(&option.replace('-', "\\-")),
            "man page lacks {option}"
        );
    }
    // Packaged unstripped, so the binary the harness runs below is the packaged one, byte for byte.
    assert!(
        std::fs::read(&bin).expect("packaged binary")
            == std::fs::read(env!("CARGO_BIN_EXE_memroute")).expect("built binary"),
        "the package holds the binary this test run built"
    );
    let packaged = root.join("etc/memroute/memroute.toml");
    run(Command::new(&bin).arg("--check-config").arg(&packaged));

    // The packaged config, with free ports instead of 11311/9100/11211, serves a get.
    let backend = Memcached::start();
    let text = std::fs::read_to_string(&packaged).expect("packaged config");
    let admin = common::free_port();
    let text = text
        .replace(
            "127.0.0.1:11311",
            &format!("127.0.0.1:{}", common::free_port()),
        )
        .replace("127.0.0.1:9100", &format!("127.0.0.1:{admin}"))
        .replace("127.0.0.1:11211", &backend.addr());
    let proxy = Memroute::start(&text);
    let mut c = Client::connect(proxy.port);
    c.roundtrip(b"set packaged 0 0 2\r\nok\r\n", b"STORED\r\n");
    c.roundtrip(b"get packaged\r\n", b"VALUE packaged 0 2\r\nok\r\nEND\r\n");
    drop(proxy);
    std::fs::remove_dir_all(&dir).ok();
}
