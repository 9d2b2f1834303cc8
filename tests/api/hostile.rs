//! Hostile bodies and headers: a body over 16 KiB is a 413, a malformed or wrongly typed body a
//! 400 (never a user registered with defaults), another content type a 415, all in the error
//! shape with a bounded message; every answer says `X-Content-Type-Options: nosniff`; the
//! dashboard's pages may not be framed.

use serde_json::Value;

use crate::helpers::*;

async fn post_users(app: &TestApp, content_type: Option<&str>, body: Vec<u8>) -> (u16, Value) {
    let mut req = app
        .client
        .post(format!("{}/api/v1/users", app.address))
        .body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[actix_rt::test]
async fn bad_bodies_are_refused_in_the_error_shape_and_register_nobody() {
    let app = spawn_app(&Db::Sqlite, &[("TIPOFF_REGISTRATION", "true")]).await;
    let json = Some("application/json");
    let long = "x".repeat(5000);
    for (ct, body, status, code) in [
        (json, br#"{"name":5}"#.to_vec(), 400, "bad_request"),
        (json, b"{".to_vec(), 400, "bad_request"),
        (json, b"[]".to_vec(), 400, "bad_request"),
        (json, b"null".to_vec(), 400, "bad_request"),
        // Blank text is not an empty body: it is not JSON.
        (json, b"\t".to_vec(), 400, "bad_request"),
        (json, b"  \n".to_vec(), 400, "bad_request"),
        (
            json,
            format!(r#"{{"name":{long}}}"#).into_bytes(),
            400,
            "bad_request",
        ),
        (
            json,
            format!(r#"{{"name":"{}"}}"#, "y".repeat(17 * 1024)).into_bytes(),
            413,
            "payload_too_large",
        ),
        (
            Some("text/plain"),
            br#"{"name":"ada"}"#.to_vec(),
            415,
            "unsupported_media_type",
        ),
    ] {
        let (s, body) = post_users(&app, ct, body).await;
        assert_eq!(s, status, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.chars().count() <= 201, "bounded: {message}");
        assert!(
            !message.contains(&long[..300]),
            "the input is not echoed whole"
        );
    }
    let audit = app.json("/admin/ledger/audit").await;
    assert!(audit["problems"].as_array().unwrap().is_empty());
    // No body at all registers (the name is optional); a right body too.
    let (s, _) = post_users(&app, None, Vec::new()).await;
    assert_eq!(s, 201);
    let (s, body) = post_users(&app, json, br#"{"name":"ada"}"#.to_vec()).await;
    assert_eq!((s, body["name"].as_str()), (201, Some("ada")));

    // The admin side takes the same care.
    let res = app
        .client
        .post(format!("{}/admin/withdrawals/1/fail", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(r#"{"reason": ["not", "a", "string"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);

    // A required body over the limit is a 413 too.
    let res = app
        .client
        .post(format!("{}/admin/imports", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(format!(r#"{{"league":"{}"}}"#, "n".repeat(20 * 1024)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");
    app.stop().await;
}

#[actix_rt::test]
async fn every_answer_says_nosniff_and_the_dashboard_cannot_be_framed() {
    let app = spawn_app(&Db::Sqlite, &[]).await;
    for path in [
        "/health",
        "/metrics",
        "/api/v1/games",
        "/no/such/route",
        "/openapi.json",
        "/admin/ui",
    ] {
        let res = app.get(path).await;
        assert_eq!(
            res.headers()
                .get("x-content-type-options")
                .map(|v| v.to_str().unwrap()),
            Some("nosniff"),
            "{path}"
        );
    }
    let res = app.get("/admin/ui").await;
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    let res = app.admin_get("/admin/ui").await;
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    app.stop().await;
}

#[actix_rt::test]
async fn an_undeclared_method_is_a_405_naming_the_allowed_ones() {
    let app = spawn_app(&Db::Sqlite, &[]).await;
    for (method, path, allow) in [
        (reqwest::Method::DELETE, "/health", "GET"),
        (reqwest::Method::PUT, "/api/v1/users", "POST"),
        (reqwest::Method::PATCH, "/admin/imports", "POST, GET"),
        (reqwest::Method::POST, "/api/v1/markets/search", "GET"),
        (reqwest::Method::DELETE, "/api/v1/markets/7", "GET"),
        (reqwest::Method::GET, "/admin/embeddings/reindex", "POST"),
    ] {
        let res = app
            .client
            .request(method.clone(), format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 405, "{method} {path}");
        assert_eq!(
            res.headers()["allow"].to_str().unwrap(),
            allow,
            "{method} {path}"
        );
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "method_not_allowed");
    }
    // Declared methods still answer, and unknown paths are still a 404.
    assert_eq!(app.get("/health").await.status(), 200);
    assert_eq!(app.get("/api/v1/markets/7").await.status(), 404);
    assert_eq!(app.get("/no/such/route").await.status(), 404);
    app.stop().await;
}

#[actix_rt::test]
async fn empty_parameters_count_as_absent_and_odd_cursors_are_a_400() {
    let app = spawn_app(&Db::Sqlite, &[]).await;
    let res = app.get("/api/v1/games?league=&date=&limit=&cursor=").await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert!(body["items"].is_array());
    // A cursor holding a four-byte character (this once split it mid-character and dropped
    // the connection), and other junk, is a clear 400.
    for cursor in ["%F0%90%80%80", "zzz", "12%3Aab", "-"] {
        for path in ["/api/v1/markets", "/admin/imports", "/api/v1/games"] {
            let res = app.admin_get(&format!("{path}?cursor={cursor}")).await;
            let status = res.status().as_u16();
            assert!(
                status == 400 || (status == 200 && cursor == "-" && path == "/api/v1/games"),
                "{path}?cursor={cursor}: {status}"
            );
            if status == 400 {
                let body: Value = res.json().await.unwrap();
                assert!(body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("cursor"));
            }
        }
    }
    // An unknown league filter is a 400 naming the known ones.
    let res = app.get("/api/v1/markets?league=xfl").await;
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert!(
        body["error"]["message"].as_str().unwrap().contains("nba"),
        "{body}"
    );
    app.stop().await;
}
