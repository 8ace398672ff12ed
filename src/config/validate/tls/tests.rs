use std::path::PathBuf;

use crate::config::{Config, expect};

/// A directory with `cert.pem`/`key.pem` (a self-signed certificate for localhost), `other.key`
/// (another key) and `ca.pem`, plus a config file path inside it.
struct Files {
    dir: PathBuf,
}

impl Files {
    fn new(tag: &str) -> Files {
        let dir = std::env::temp_dir().join(format!(
            "memroute-tls-validate-{}-{tag}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("ca.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        std::fs::write(dir.join("other.key"), other.serialize_pem()).unwrap();
        std::fs::write(dir.join("empty.pem"), "").unwrap();
        Files { dir }
    }

    fn config_file(&self) -> String {
        self.dir.join("memroute.toml").display().to_string()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn parse(&self, text: &str) -> Result<Config, Vec<(usize, usize, String)>> {
        Config::parse(text, &self.config_file()).map_err(|e| {
            e.0.into_iter()
                .map(|e| (e.line, e.column, e.message))
                .collect()
        })
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const POOL: &str = "[pools.a]\nservers = [\"127.0.0.1:11211\"]\n";

#[test]
fn relative_paths_are_read_from_the_config_files_directory() {
    let f = Files::new("relative");
    let text = format!(
        "[listen]\ntls = {{ cert = \"cert.pem\", key = \"key.pem\", client_ca = \"ca.pem\" }}\n{POOL}tls = {{ ca = \"ca.pem\", server_name = \"localhost\" }}\n"
    );
    let c = f.parse(&text).unwrap_or_else(|e| panic!("{e:#?}"));
    let tls = c.listen.tls.unwrap();
    assert_eq!(tls.cert, f.path("cert.pem"));
    assert_eq!(tls.client_ca, Some(f.path("ca.pem")));
    assert_eq!(tls.handshake_timeout, crate::tls::DEFAULT_HANDSHAKE_TIMEOUT);
    let pool = c.pools["a"].tls.clone().unwrap();
    assert_eq!(pool.ca, Some(f.path("ca.pem")));
    assert_eq!(pool.server_name.as_deref(), Some("localhost"));
}

#[test]
fn each_file_problem_is_reported_at_the_key_that_names_the_file() {
    let f = Files::new("problems");
    // Column 16 is the opening quote of the value after `tls = { cert = `.
    let missing = format!("[listen]\ntls = {{ cert = \"nope.pem\", key = \"key.pem\" }}\n{POOL}");
    let e = f.parse(&missing).unwrap_err();
    assert_eq!(e.len(), 1, "{e:#?}");
    assert_eq!((e[0].0, e[0].1), (2, 16));
    assert_eq!(
        e[0].2,
        format!(
            "`tls`: {}: cannot read: No such file or directory (os error 2)",
            f.path("nope.pem").display()
        )
    );
    let empty = format!("[listen]\ntls = {{ cert = \"empty.pem\", key = \"key.pem\" }}\n{POOL}");
    let e = f.parse(&empty).unwrap_err();
    assert_eq!((e[0].0, e[0].1), (2, 16));
    assert!(e[0].2.contains("empty.pem: no certificate in it"), "{e:#?}");
    let wrong_key =
        format!("[listen]\ntls = {{ cert = \"cert.pem\", key = \"other.key\" }}\n{POOL}");
    let e = f.parse(&wrong_key).unwrap_err();
    // At `key`'s value.
    assert_eq!((e[0].0, e[0].1), (2, 34));
    assert!(
        e[0].2
            .contains("other.key: is not the key of the certificate in"),
        "{e:#?}"
    );
    let key_as_ca = format!("{POOL}tls = {{ ca = \"key.pem\" }}\n");
    let e = f.parse(&key_as_ca).unwrap_err();
    assert_eq!((e[0].0, e[0].1), (3, 14));
    assert!(e[0].2.contains("key.pem: no certificate in it"), "{e:#?}");
}

#[test]
fn missing_and_unknown_keys_are_errors_too() {
    let f = Files::new("keys");
    let text = format!(
        "[listen]\ntls = {{ cert = \"cert.pem\", certificate = \"x\", handshake_timeout = \"0s\" }}\n{POOL}tls = {{ cert = \"cert.pem\" }}\n[pools.b]\nservers = [\"127.0.0.1:1\"]\ntls = \"yes\"\n[[routes]]\nprefix = \"\"\ntiers = [\"a\"]\n"
    );
    let e = f.parse(&text).unwrap_err();
    let messages: Vec<&str> = e.iter().map(|(_, _, m)| m.as_str()).collect();
    let want = [
        "[listen] tls needs `key`",
        "unknown key `certificate` in [listen] tls",
        "`handshake_timeout` must be more than 0",
        "`cert` needs `key` too",
        "`tls` must be a table",
    ];
    expect::messages(&messages, &want, |message, want| message.contains(want));
}

#[test]
fn listeners_inherit_listen_tls_unless_they_say_otherwise() {
    let f = Files::new("listeners");
    let text = format!(
        "[listen]\naddress = \"127.0.0.1:1\"\ntls = {{ cert = \"cert.pem\", key = \"key.pem\" }}\n\
         [[listeners]]\naddress = \"127.0.0.1:2\"\n\
         [[listeners]]\naddress = \"127.0.0.1:3\"\ntls = false\n\
         [[listeners]]\naddress = \"unix:/tmp/memroute-x.sock\"\n{POOL}"
    );
    let c = f.parse(&text).unwrap_or_else(|e| panic!("{e:#?}"));
    let tls: Vec<bool> = c.listeners.iter().map(|l| l.tls.is_some()).collect();
    assert_eq!(tls, [true, true, false, false]);
    let bad = format!(
        "[[listeners]]\naddress = \"unix:/tmp/memroute-y.sock\"\ntls = false\n\
         [[listeners]]\naddress = \"127.0.0.1:4\"\ntls = true\n{POOL}"
    );
    let e = f.parse(&bad).unwrap_err();
    assert_eq!(e.len(), 2, "{e:#?}");
    assert_eq!((e[0].0, e[0].1), (3, 1));
    assert!(e[0].2.contains("`tls` is for TCP listeners"), "{e:#?}");
    assert!(e[1].2.contains("`tls = true`"), "{e:#?}");
}
