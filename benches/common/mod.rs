//! What the benches share.

/// A fresh PostgreSQL database named after `tag` on the server of `TIPOFF_TEST_POSTGRES_URL`,
/// or `None` when the variable is unset or the server unreachable.
pub async fn postgres_url(tag: &str) -> Option<String> {
    let base = std::env::var("TIPOFF_TEST_POSTGRES_URL").ok()?;
    let name = format!("tipoff_test_bench_{tag}_{}", std::process::id());
    let admin = sqlx::PgPool::connect(&base).await.ok()?;
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
        .execute(&admin)
        .await;
    admin.close().await;
    tipoff_actors::store::postgres::create_database(&base, &name)
        .await
        .ok()
}

/// The line every bench starts with: the cores it ran on and the date.
pub fn print_machine() {
    println!(
        "machine: {} cores; {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        chrono::Utc::now().format("%Y-%m-%d")
    );
}

/// This process's resident set size, in KB.
#[allow(dead_code)]
pub fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
