//! The dashboard in a real browser: headless Chromium (driven over the DevTools protocol by
//! `tests/browser/dashboard.py`) signs in to `/admin/ui`, sees every service, clicks restart on
//! `cleanup` and sees its restart count change; a screenshot is written to
//! `target/test-output/dashboard.png`. Also: the page needs a session, and a cookie session
//! cannot change anything without the dashboard's header (CSRF).

use std::process::Command;
use std::time::Duration;

use crate::helpers::*;

#[test]
fn chromium_signs_in_sees_services_and_restarts_one() {
    let d = Daemon::spawn(&[]);
    d.wait_notify("READY=1", Duration::from_secs(15));
    let out_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-output");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/dashboard.py");
    let out = Command::new("python3")
        .args([script, &d.url(""), ADMIN_TOKEN, "cleanup", out_dir])
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if !ci && (out.status.code() == Some(2) || stderr.contains("No module named 'websocket'")) {
        eprintln!("SKIPPED: the browser test needs Chromium (apt-get install chromium) and `pip install websocket-client`: {stderr}");
        return;
    }
    assert!(
        out.status.success(),
        "browser test failed: {stdout}\n{stderr}\n{}",
        d.stderr()
    );
    let fields: Vec<&str> = stdout.split_whitespace().collect();
    assert_eq!(fields[0], "ok", "{stdout}");
    let (before, after): (u64, u64) = (fields[1].parse().unwrap(), fields[2].parse().unwrap());
    assert_eq!(
        after,
        before + 1,
        "restart count went from {before} to {after}"
    );
    for name in ["db", "cleanup", "events", "poller", "watcher", "outbox"] {
        assert!(
            fields[3].split(',').any(|n| n == name),
            "{name} not shown: {stdout}"
        );
    }
    assert_eq!(fields[4], "leader_(epoch_1)", "the role is shown: {stdout}");
    assert_eq!(
        fields[5], "no_open_claims",
        "the claims panel is shown: {stdout}"
    );
    let png = std::fs::read(format!("{out_dir}/dashboard.png")).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real screenshot"
    );
    // And the daemon agrees.
    let status: serde_json::Value = reqwest::blocking::Client::new()
        .get(d.url("/debug/status"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let cleanup = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "cleanup")
        .unwrap();
    assert_eq!(cleanup["restarts"].as_u64(), Some(after));
}

#[actix_rt::test]
async fn the_page_needs_a_session_and_cookie_writes_need_the_ui_header() {
    let app = spawn_app(&Db::Sqlite, &[]).await;
    let res = app.get("/admin/ui").await;
    assert_eq!(res.status(), 401);
    let html = res.text().await.unwrap();
    assert!(
        html.contains("Admin token") && !html.contains("#services"),
        "a sign-in form only"
    );

    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = no_redirect
        .post(format!("{}/admin/ui/login", app.address))
        .form(&[("token", "wrong-token-0123456789")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = no_redirect
        .post(format!("{}/admin/ui/login", app.address))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_string();

    let res = no_redirect
        .get(format!("{}/admin/ui", app.address))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(html.contains("id=\"services\""));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external assets"
    );

    // A cross-site form could carry the cookie but not the header.
    let url = format!("{}/admin/services/cleanup/restart", app.address);
    let res = no_redirect
        .post(&url)
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let res = no_redirect
        .post(&url)
        .header("cookie", &session)
        .header("x-tipoff-ui", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    app.stop().await;
}
