//! deploy/: the systemd unit passes `systemd-analyze verify` (with its binary path pointed at
//! the built one) and carries what a deploy needs; the Kubernetes example has the probes, the
//! preStop delay and a grace period above the shutdown deadline.

use std::process::Command;

const UNIT: &str = include_str!("../../deploy/tipoff.service");
const K8S: &str = include_str!("../../deploy/kubernetes/tipoff.yaml");

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn seconds(value: &str) -> u64 {
    value.trim().trim_end_matches('s').parse().unwrap()
}

#[test]
fn systemd_unit_verifies_and_has_the_required_settings() {
    for line in [
        "Type=notify",
        "Restart=on-failure",
        "RestartPreventExitStatus=78",
        "ExecStartPre=/usr/local/bin/tipoff check-config",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "StateDirectory=tipoff",
        "Environment=TIPOFF_ENV_FILE=/run/tipoff/tipoff.env",
        "RuntimeDirectory=tipoff",
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "SystemCallFilter=@system-service",
    ] {
        assert!(
            UNIT.lines().any(|l| l == line),
            "tipoff.service lacks `{line}`"
        );
    }
    let value = |key: &str| {
        UNIT.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("tipoff.service lacks {key}"))
    };
    assert!(seconds(value("WatchdogSec")) > 0);
    // Above the daemon's default shutdown deadline (25 s).
    assert!(seconds(value("TimeoutStopSec")) > 25);

    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        assert!(
            !in_ci(),
            "systemd-analyze must be installed in CI (Debian package `systemd`)"
        );
        eprintln!("SKIPPED: systemd-analyze is not installed (apt-get install systemd); the unit was not verified");
        return;
    };
    assert!(probe.status.success());
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("tipoff.service");
    std::fs::write(
        &unit,
        UNIT.replace("/usr/local/bin/tipoff", env!("CARGO_BIN_EXE_tipoff")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let about_unit: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("tipoff.service"))
        .collect();
    assert!(
        out.status.success() && about_unit.is_empty(),
        "systemd-analyze verify: {stderr}"
    );
}

#[test]
fn kubernetes_example_has_probes_prestop_and_grace() {
    assert!(K8S.contains("livenessProbe:\n            httpGet: { path: /health, port: http }"));
    assert!(K8S.contains("readinessProbe:\n            httpGet: { path: /ready, port: http }"));
    assert!(K8S.contains("preStop:"));
    assert!(
        K8S.contains("replicas: 3"),
        "replicas behind the leader lease"
    );
    assert!(K8S.contains("kind: PodDisruptionBudget"));
    assert!(K8S.contains("TIPOFF_DATABASE_URL: postgres://"));
    let grace: u64 = K8S
        .lines()
        .find_map(|l| l.trim().strip_prefix("terminationGracePeriodSeconds: "))
        .expect("terminationGracePeriodSeconds")
        .parse()
        .unwrap();
    let pre_stop: u64 = K8S
        .split("command: [\"sleep\", \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a preStop sleep")
        .parse()
        .unwrap();
    assert!(
        grace > 25 + pre_stop,
        "grace {grace}s must cover preStop {pre_stop}s + the 25s deadline"
    );
    // The document parses as YAML (PyYAML), when available.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("k8s.yaml");
    std::fs::write(&file, K8S).unwrap();
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import sys, yaml\nprint(len([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))",
        )
        .arg(&file)
        .output()
        .unwrap();
    if out.status.success() {
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "5",
            "Secret, ConfigMap, Deployment, PodDisruptionBudget, Service"
        );
    } else {
        eprintln!("SKIPPED: PyYAML missing; the Kubernetes example was checked as text only");
    }
}
