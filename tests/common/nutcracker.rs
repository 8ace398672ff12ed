//! Debian's `nutcracker` (twemproxy 0.5): the reference for key placement (DESIGN §2).

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::process::{free_port, kill_and_wait, read_log, scratch_dir, wait_until_accepting};

/// Debian's `nutcracker` (twemproxy 0.5), the reference for key placement.
pub struct Nutcracker {
    /// The client port of the first pool in the YAML.
    pub port: u16,
    /// Its stats port (JSON over TCP).
    pub stats_port: u16,
    child: Child,
    dir: PathBuf,
}

/// A one-pool nutcracker YAML: `servers` as `host:port:weight [name]` strings.
pub fn nutcracker_config(listen_port: u16, servers: &[String], hash: &str, dist: &str) -> String {
    let mut yaml = format!(
        "alpha:\n  listen: 127.0.0.1:{listen_port}\n  hash: {hash}\n  distribution: {dist}\n  \
         timeout: 1000\n  auto_eject_hosts: false\n  servers:\n"
    );
    for s in servers {
        yaml.push_str(&format!("   - {s}\n"));
    }
    yaml
}

impl Nutcracker {
    /// Runs `nutcracker -c FILE -s STATS -a 127.0.0.1 -p PIDFILE -o LOG` in the foreground and
    /// waits until the first pool's `listen` port accepts.
    pub fn start(yaml: &str) -> Nutcracker {
        let parsed: serde_yaml::Value = serde_yaml::from_str(yaml).expect("valid YAML");
        let listen = parsed
            .as_mapping()
            .and_then(|m| m.values().next())
            .and_then(|pool| pool.get("listen"))
            .and_then(|l| l.as_str())
            .expect("first pool has listen: host:port");
        let port: u16 = listen
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        let dir = scratch_dir("nutcracker");
        let conf = dir.join("nutcracker.yml");
        fs::write(&conf, yaml).expect("write nutcracker config");
        let stats_port = free_port();
        let mut child = Command::new("nutcracker")
            .arg("-c")
            .arg(&conf)
            .args(["-s", &stats_port.to_string(), "-a", "127.0.0.1"])
            .arg("-p")
            .arg(dir.join("nutcracker.pid"))
            .arg("-o")
            .arg(dir.join("nutcracker.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run nutcracker (scripts/deps.sh installs it)");
        if let Err(e) = wait_until_accepting(port, &mut child, false) {
            kill_and_wait(&mut child);
            let log = read_log(&dir.join("nutcracker.log"));
            let _ = fs::remove_dir_all(&dir);
            panic!("nutcracker {e}; log: {log}");
        }
        Nutcracker {
            port,
            stats_port,
            child,
            dir,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Nutcracker {
    fn drop(&mut self) {
        kill_and_wait(&mut self.child);
        let _ = fs::remove_dir_all(&self.dir);
    }
}
