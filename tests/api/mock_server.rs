//! What every local mock (ESPN, Solana RPC, webhook receiver) shares: an actix-web server on
//! its own thread with its own actix system, so a test that blocks (waiting on a daemon
//! process) never starves it.

use std::collections::HashMap;

use actix_web::{web, App, HttpRequest, HttpServer};

/// The tipoff instance a request came from, read from its `User-Agent`
/// (`tipoff/<version> (instance <id>)`); `"?"` for other clients.
pub fn instance_of(req: &HttpRequest) -> String {
    req.headers()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .and_then(|ua| ua.split("(instance ").nth(1))
        .map(|rest| rest.trim_end_matches(')').to_string())
        .unwrap_or_else(|| "?".into())
}

/// Counts one request of `instance`.
pub fn count(agents: &mut HashMap<String, usize>, instance: String) {
    *agents.entry(instance).or_default() += 1;
}

/// Serves the routes `configure` registers, with `data` as `web::Data`, on a free loopback
/// port; returns the port and the server's handle (stop it with `handle.stop(false)`).
pub fn serve<T: Clone + Send + 'static>(
    name: &'static str,
    workers: usize,
    data: T,
    configure: fn(&mut web::ServiceConfig),
) -> (u16, actix_web::dev::ServerHandle) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let server = HttpServer::new(move || {
                App::new()
                    .app_data(web::Data::new(data.clone()))
                    .configure(configure)
            })
            .workers(workers)
            .disable_signals()
            .bind(("127.0.0.1", 0))
            .unwrap_or_else(|e| panic!("mock {name} binds: {e}"));
            let port = server.addrs()[0].port();
            let server = server.run();
            tx.send((port, server.handle())).unwrap();
            let _ = server.await;
        })
    });
    rx.recv().unwrap_or_else(|_| panic!("mock {name} started"))
}
