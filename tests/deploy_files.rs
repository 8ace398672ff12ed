//! The operations files under `deploy/` parse, agree with memroute and with each other, and pass
//! their own tools' checks: `promtool check rules` / `promtool test rules` for the alerts (and
//! for every dashboard query), `systemd-analyze verify` for the unit when systemd is installed,
//! and `Config::parse` for every memroute config they carry.
//!
//! promtool is required (Debian package `prometheus`); systemd-analyze is optional.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use memroute::config::Config;
use memroute::metrics::Metrics;
use serde::Deserialize;
use serde_yaml::Value as Yaml;

/// memroute's drain timeout on SIGTERM (`DRAIN_TIMEOUT` in src/main.rs, DESIGN §6).
const DRAIN_TIMEOUT_SECS: u64 = 10;

/// Where the config directory is mounted in the pod and the file `--config` names.
const K8S_CONFIG_DIR: &str = "/etc/memroute";
const K8S_CONFIG_FILE: &str = "/etc/memroute/memroute.toml";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn deploy(rel: &str) -> PathBuf {
    repo().join("deploy").join(rel)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every file under `deploy/` whose name ends with one of `exts`, sorted.
fn deploy_files(exts: &[&str]) -> Vec<PathBuf> {
    fn walk(dir: &Path, exts: &[&str], out: &mut Vec<PathBuf>) {
        let entries =
            std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                walk(&path, exts, out);
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| exts.contains(&e))
            {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&repo().join("deploy"), exts, &mut out);
    out.sort();
    out
}

/// Every document of a (possibly multi-document) YAML file.
fn yaml_documents(path: &Path) -> Vec<Yaml> {
    let text = read(path);
    serde_yaml::Deserializer::from_str(&text)
        .enumerate()
        .map(|(i, doc)| {
            Yaml::deserialize(doc).unwrap_or_else(|e| {
                panic!(
                    "{}: YAML document {} does not parse: {e}",
                    path.display(),
                    i + 1
                )
            })
        })
        .collect()
}

/// The single Kubernetes object of `kind` in `file` (under deploy/kubernetes).
fn k8s_object(file: &str, kind: &str) -> Yaml {
    let path = deploy(&format!("kubernetes/{file}"));
    let mut found: Vec<Yaml> = yaml_documents(&path)
        .into_iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect();
    assert_eq!(found.len(), 1, "{}: expected one {kind}", path.display());
    found.remove(0)
}

fn str_at<'a>(v: &'a Yaml, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, found {v:?}"))
}

/// The TOML text the ConfigMap carries.
fn configmap_toml() -> String {
    let cm = k8s_object("configmap.yaml", "ConfigMap");
    str_at(&cm["data"]["memroute.toml"], "ConfigMap data.memroute.toml").to_string()
}

fn parse_config(text: &str, name: &str) -> Config {
    Config::parse(text, name).unwrap_or_else(|errors| panic!("{name} is not valid:\n{errors}"))
}

/// The ConfigMap's config, validated; errors point at lines and columns of the YAML file.
fn configmap_config() -> Config {
    let file = "deploy/kubernetes/configmap.yaml";
    let text = configmap_toml();
    Config::parse(&text, file).unwrap_or_else(|errors| {
        // The TOML is a `memroute.toml: |` block: its line 1 is the line after that key, shifted
        // right by the block's indentation.
        let yaml = read(&deploy("kubernetes/configmap.yaml"));
        let lines: Vec<&str> = yaml.lines().collect();
        let key = lines
            .iter()
            .position(|l| l.trim_start().starts_with("memroute.toml:"))
            .expect("the memroute.toml key");
        let indent = lines[key + 1..]
            .iter()
            .find(|l| !l.trim().is_empty())
            .map_or(0, |l| l.len() - l.trim_start().len());
        let mut report = String::new();
        for mut e in errors.0 {
            if e.line > 0 {
                e.line += key + 1;
                e.column += indent;
            }
            report.push_str(&format!("{e}\n"));
        }
        panic!("{file}: the memroute.toml it carries is not valid:\n{report}")
    })
}

/// The memroute container of the Deployment.
fn memroute_container(deployment: &Yaml) -> &Yaml {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .expect("containers")
        .iter()
        .find(|c| c["name"].as_str() == Some("memroute"))
        .expect("a container named memroute")
}

fn container_port(container: &Yaml, name: &str) -> u16 {
    let port = container["ports"]
        .as_sequence()
        .expect("container ports")
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no container port named {name}"));
    port["containerPort"].as_u64().expect("containerPort") as u16
}

fn port_of(address: &str) -> u16 {
    address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {address:?}"))
}

/// Runs `promtool`, failing with install instructions when it is missing.
fn promtool(args: &[&str]) -> Output {
    match Command::new("promtool").args(args).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "promtool is not installed; it checks deploy/prometheus. Install it with \
             `apt-get install prometheus` (Debian) or put a Prometheus release's promtool on PATH"
        ),
        Err(e) => panic!("cannot run promtool: {e}"),
    }
}

fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("memroute-deploy-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

// ---- every file parses --------------------------------------------------------------------------

#[test]
fn every_yaml_file_parses() {
    let files = deploy_files(&["yml", "yaml"]);
    assert!(
        files.len() >= 7,
        "expected the YAML files of deploy/, found {files:?}"
    );
    for path in files {
        let docs = yaml_documents(&path);
        assert!(
            docs.iter().any(|d| !d.is_null()),
            "{}: no YAML document",
            path.display()
        );
    }
}

#[test]
fn every_json_file_parses() {
    let files = deploy_files(&["json"]);
    assert!(
        !files.is_empty(),
        "expected the Grafana dashboard under deploy/"
    );
    for path in files {
        serde_json::from_str::<serde_json::Value>(&read(&path))
            .unwrap_or_else(|e| panic!("{}: JSON does not parse: {e}", path.display()));
    }
}

#[test]
fn every_kubernetes_object_has_kind_and_name() {
    for path in deploy_files(&["yaml", "yml"]) {
        if !path.starts_with(deploy("kubernetes")) {
            continue;
        }
        for doc in yaml_documents(&path).iter().filter(|d| !d.is_null()) {
            for key in ["apiVersion", "kind"] {
                assert!(doc[key].is_string(), "{}: no {key}", path.display());
            }
            assert!(
                doc["metadata"]["name"].is_string(),
                "{}: no metadata.name",
                path.display()
            );
        }
    }
}

// ---- memroute configs ---------------------------------------------------------------------------

#[test]
fn configmap_config_is_valid() {
    let config = configmap_config();
    // Reachable from outside the pod (probes, Service, Prometheus).
    assert!(config.listen.address.starts_with("0.0.0.0:"));
    let admin = config
        .admin
        .expect("the ConfigMap config needs [admin] for the probes");
    assert!(admin.address.starts_with("0.0.0.0:"));
    // StatefulSet DNS names, not IPs: pods move, names stay.
    for pool in config.pools.values() {
        for server in &pool.servers {
            assert!(
                server.address.contains(".memcached"),
                "{}: expected a StatefulSet name like memcached-0.memcached:11211",
                server.address
            );
        }
    }
}

#[test]
fn docker_default_config_is_valid() {
    let path = deploy("docker/memroute.toml");
    let config = parse_config(&read(&path), "deploy/docker/memroute.toml");
    assert_eq!(config.listen.address, "0.0.0.0:11311");
    assert_eq!(
        config.admin.expect("[admin] in the image's config").address,
        "0.0.0.0:9100"
    );
    let dockerfile = read(&deploy("docker/Dockerfile"));
    assert!(dockerfile.contains("EXPOSE 11311 9100"));
    assert!(dockerfile.contains("/etc/memroute/memroute.toml"));
}

// ---- Kubernetes ---------------------------------------------------------------------------------

#[test]
fn deployment_mounts_the_config_directory_without_subpath() {
    let deployment = k8s_object("deployment.yaml", "Deployment");
    let container = memroute_container(&deployment);
    let mounts = container["volumeMounts"]
        .as_sequence()
        .expect("volumeMounts");
    let mount = mounts
        .iter()
        .find(|m| m["mountPath"].as_str() == Some(K8S_CONFIG_DIR))
        .unwrap_or_else(|| panic!("no volume mounted at {K8S_CONFIG_DIR}"));
    // A subPath mount is copied once at pod start: ConfigMap updates would never arrive and hot
    // reload would silently stop working.
    for m in mounts {
        assert!(
            m.get("subPath").is_none() && m.get("subPathExpr").is_none(),
            "volume mount {m:?} uses subPath; ConfigMap updates would not reach the pod"
        );
    }
    let volume_name = str_at(&mount["name"], "volumeMount name");
    let volume = deployment["spec"]["template"]["spec"]["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .find(|v| v["name"].as_str() == Some(volume_name))
        .expect("the mounted volume");
    let cm = k8s_object("configmap.yaml", "ConfigMap");
    assert_eq!(
        volume["configMap"]["name"], cm["metadata"]["name"],
        "the config volume must be the ConfigMap of configmap.yaml"
    );
    assert!(
        volume["configMap"].get("items").is_none(),
        "no `items`: the key memroute.toml must appear under its own name"
    );
    // --config names the file inside the mounted directory.
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .map(|a| str_at(a, "arg"))
        .collect();
    let config_arg = args
        .windows(2)
        .find(|w| w[0] == "--config")
        .map(|w| w[1])
        .expect("--config FILE in args");
    assert_eq!(config_arg, K8S_CONFIG_FILE);
}

#[test]
fn deployment_ports_probes_and_annotations_match_the_config() {
    let config = configmap_config();
    let admin_port = port_of(&config.admin.expect("[admin]").address);
    let listen_port = port_of(&config.listen.address);

    let deployment = k8s_object("deployment.yaml", "Deployment");
    let container = memroute_container(&deployment);
    assert_eq!(container_port(container, "admin"), admin_port);
    assert_eq!(container_port(container, "memcache"), listen_port);

    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe} path");
        assert_eq!(get["port"].as_str(), Some("admin"), "{probe} port");
    }

    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(security["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(
        deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"].as_bool(),
        Some(true)
    );

    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"].as_str(), Some("true"));
    assert_eq!(
        annotations["prometheus.io/port"].as_str(),
        Some(admin_port.to_string().as_str())
    );
    assert_eq!(annotations["prometheus.io/path"].as_str(), Some("/metrics"));

    // The Service and the ServiceMonitor reach the same named ports.
    let service = k8s_object("service.yaml", "Service");
    let service_ports: Vec<&str> = service["spec"]["ports"]
        .as_sequence()
        .expect("service ports")
        .iter()
        .map(|p| str_at(&p["targetPort"], "targetPort"))
        .collect();
    assert!(service_ports.contains(&"memcache") && service_ports.contains(&"admin"));
    let monitor = k8s_object("servicemonitor.yaml", "ServiceMonitor");
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"].as_str(),
        Some("admin")
    );
    assert_eq!(
        monitor["spec"]["endpoints"][0]["path"].as_str(),
        Some("/metrics")
    );
    // The Service and the PodDisruptionBudget select the Deployment's pods; the ServiceMonitor
    // selects the Service.
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let pdb = k8s_object("pdb.yaml", "PodDisruptionBudget");
    let subset = |selector: &Yaml, labels: &Yaml, what: &str| {
        let selector = selector.as_mapping().expect("selector");
        assert!(!selector.is_empty(), "{what}: empty selector");
        for (k, v) in selector {
            assert_eq!(&labels[k], v, "{what}: label {k:?}");
        }
    };
    subset(&service["spec"]["selector"], pod_labels, "Service → pods");
    subset(
        &pdb["spec"]["selector"]["matchLabels"],
        pod_labels,
        "PDB → pods",
    );
    subset(
        &monitor["spec"]["selector"]["matchLabels"],
        &service["metadata"]["labels"],
        "ServiceMonitor → Service",
    );
}

#[test]
fn termination_grace_period_covers_the_drain() {
    let deployment = k8s_object("deployment.yaml", "Deployment");
    let spec = &deployment["spec"]["template"]["spec"];
    let grace = spec["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    let pre_stop = memroute_container(&deployment)["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        grace > pre_stop + DRAIN_TIMEOUT_SECS,
        "terminationGracePeriodSeconds {grace} must exceed preStop {pre_stop} s + drain {DRAIN_TIMEOUT_SECS} s"
    );
}

// ---- Prometheus and Grafana ---------------------------------------------------------------------

#[test]
fn alert_rules_pass_promtool_check() {
    let rules = deploy("prometheus/alerts.yml");
    let out = promtool(&["check", "rules", rules.to_str().expect("utf-8 path")]);
    assert_success("promtool check rules deploy/prometheus/alerts.yml", &out);
}

#[test]
fn alert_rules_pass_their_unit_tests() {
    let tests = deploy("prometheus/alerts_test.yml");
    let out = promtool(&["test", "rules", tests.to_str().expect("utf-8 path")]);
    assert_success(
        "promtool test rules deploy/prometheus/alerts_test.yml",
        &out,
    );
}

#[test]
fn every_alert_has_a_firing_and_a_quiet_test() {
    let rules = yaml_documents(&deploy("prometheus/alerts.yml")).remove(0);
    let alerts: BTreeSet<&str> = rules["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules"))
        .filter_map(|r| r["alert"].as_str())
        .collect();
    let tests = yaml_documents(&deploy("prometheus/alerts_test.yml")).remove(0);
    let mut fires = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for test in tests["tests"].as_sequence().expect("tests") {
        for case in test["alert_rule_test"].as_sequence().into_iter().flatten() {
            let name = str_at(&case["alertname"], "alertname");
            match case["exp_alerts"].as_sequence() {
                Some(a) if !a.is_empty() => fires.insert(name),
                _ => quiet.insert(name),
            };
        }
    }
    for alert in &alerts {
        assert!(fires.contains(alert), "no test shows {alert} firing");
        assert!(quiet.contains(alert), "no test shows {alert} staying quiet");
    }
}

/// Every PromQL query of the dashboard, with Grafana's variables filled in.
fn dashboard_queries() -> Vec<(String, String)> {
    let path = deploy("grafana/memroute-dashboard.json");
    let dashboard: serde_json::Value = serde_json::from_str(&read(&path)).expect("dashboard JSON");
    let mut queries = Vec::new();
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let id = panel["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "panel id {id} is used twice");
        let title = panel["title"].as_str().unwrap_or("?");
        for target in panel["targets"].as_array().into_iter().flatten() {
            assert_eq!(
                target["datasource"]["uid"], "${datasource}",
                "panel {title:?}: use the $datasource variable"
            );
            let expr = target["expr"].as_str().expect("target expr");
            queries.push((title.to_string(), expr.to_string()));
        }
    }
    for annotation in dashboard["annotations"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(expr) = annotation["expr"].as_str() {
            let name = annotation["name"].as_str().unwrap_or("annotation");
            queries.push((name.to_string(), expr.to_string()));
        }
    }
    assert!(queries.len() >= 10, "the dashboard should have queries");
    queries
        .into_iter()
        .map(|(title, expr)| {
            let expr = expr
                .replace("$__rate_interval", "1m")
                .replace("$__interval", "1m")
                .replace("$job", ".*")
                .replace("$instance", ".*");
            (title, expr)
        })
        .collect()
}

#[test]
fn dashboard_queries_are_valid_promql() {
    // promtool has no offline "parse this query": wrap each query in a recording rule.
    let rules: Vec<Yaml> = dashboard_queries()
        .iter()
        .enumerate()
        .map(|(i, (_, expr))| {
            let mut rule = serde_yaml::Mapping::new();
            rule.insert("record".into(), format!("dashboard:query_{i}").into());
            rule.insert("expr".into(), expr.clone().into());
            Yaml::Mapping(rule)
        })
        .collect();
    let mut group = serde_yaml::Mapping::new();
    group.insert("name".into(), "dashboard".into());
    group.insert("rules".into(), Yaml::Sequence(rules));
    let mut file = serde_yaml::Mapping::new();
    file.insert("groups".into(), Yaml::Sequence(vec![Yaml::Mapping(group)]));
    let dir = scratch("dashboard");
    let path = dir.join("dashboard_rules.yml");
    std::fs::write(&path, serde_yaml::to_string(&file).expect("YAML")).expect("write rules");
    let out = promtool(&["check", "rules", path.to_str().expect("utf-8 path")]);
    assert_success("promtool check rules on the dashboard's queries", &out);
    std::fs::remove_dir_all(&dir).ok();
}

/// The names `/metrics` can show, read from a live registry. Vector series appear only once a
/// label value exists, so one of each is created first.
fn exported_metric_names() -> BTreeSet<String> {
    let metrics = Metrics::new();
    let _ = metrics.backend.server("memcached-0.memcached:11211");
    let _ = metrics.tiers.tier("main", 0);
    let _ = metrics.tiers.reshard_tier("main");
    metrics
        .tiers
        .reshard_copies
        .with_label_values(&["main", "ok"]);
    metrics.tiers.reshard_rings.with_label_values(&["main"]);
    metrics.tiers.replays.with_label_values(&["queued"]);
    metrics.tiers.lower_unknown.with_label_values(&["delete"]);
    let mut names = BTreeSet::new();
    for family in metrics.registry.gather() {
        let name = family.get_name().to_string();
        if family.get_field_type() == prometheus::proto::MetricType::HISTOGRAM {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
        names.insert(name);
    }
    names
}

/// Every `memroute_…` word in `text`.
fn metric_words(text: &str) -> BTreeSet<String> {
    let mut words = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("memroute_") {
        let word: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[at + word.len()..];
        words.insert(word);
    }
    words
}

#[test]
fn alerts_dashboard_and_runbook_use_only_exported_metrics() {
    let known = exported_metric_names();
    for rel in [
        "prometheus/alerts.yml",
        "prometheus/alerts_test.yml",
        "grafana/memroute-dashboard.json",
        "README.md",
    ] {
        let words = metric_words(&read(&deploy(rel)));
        assert!(!words.is_empty(), "deploy/{rel} names no memroute metric");
        for word in words {
            assert!(
                known.contains(&word),
                "deploy/{rel} uses {word}, which memroute does not export (known: {known:?})"
            );
        }
    }
}

// ---- systemd ------------------------------------------------------------------------------------

#[test]
fn systemd_unit_verifies() {
    let unit = deploy("systemd/memroute.service");
    let text = read(&unit);
    // Every line missing from the unit, named at once.
    let lines: BTreeSet<&str> = text.lines().collect();
    let missing: Vec<&str> = [
        "ExecStart=/usr/local/bin/memroute --config /etc/memroute/memroute.toml --log-format json",
        "ExecStartPre=/usr/local/bin/memroute --check-config /etc/memroute/memroute.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=",
        "TimeoutStopSec=15",
    ]
    .into_iter()
    .filter(|line| !lines.contains(line))
    .collect();
    assert!(missing.is_empty(), "memroute.service lacks {missing:?}");
    // systemd-analyze checks that every Exec binary exists: point them at the one cargo built.
    let dir = scratch("systemd");
    let copy = dir.join("memroute.service");
    std::fs::write(
        &copy,
        text.replace("/usr/local/bin/memroute", env!("CARGO_BIN_EXE_memroute")),
    )
    .expect("write unit copy");
    let out = match Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("systemd_unit_verifies: systemd-analyze not found, skipped the verify step");
            return;
        }
        Err(e) => panic!("cannot run systemd-analyze: {e}"),
    };
    // Unknown keys and bad values are warnings with exit status 0: fail on any line about our
    // unit (other units of the host may have their own complaints).
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("memroute.service"))
        .collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify deploy/systemd/memroute.service ({}):\n{stderr}",
        out.status
    );
    std::fs::remove_dir_all(&dir).ok();
}
