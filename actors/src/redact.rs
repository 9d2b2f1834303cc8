//! Credentials out of URLs, before a URL reaches a log line, an error, `last_error`,
//! `/debug/status` or `check-config`. Any URL an operator configures (the database, the Solana
//! RPC, the embeddings API, webhook receivers, ESPN) may carry one: a password in the
//! user-info, or a key in the query string.

/// Query parameters whose values are secrets (compared case-insensitively, `-` and `_` alike).
const SECRET_PARAMS: &[&str] = &[
    "password",
    "passwd",
    "pass",
    "pwd",
    "apikey",
    "api_key",
    "key",
    "token",
    "access_token",
    "auth",
    "secret",
    "client_secret",
    "signature",
    "sig",
    "code",
];

fn secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase().replace('-', "_");
    SECRET_PARAMS.contains(&name.as_str())
        || name.ends_with("_key")
        || name.ends_with("_token")
        || name.ends_with("_secret")
        || name.ends_with("password")
}

/// `url` with the user-info password and the values of secret query parameters replaced by
/// `***` (everything else, including the user name, host and path, is kept). Text that is not
/// a URL is cut before any `@`, `?` or `#`.
pub fn url(text: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(text) else {
        return match text.find(['@', '?', '#']) {
            Some(at) => format!("{}***", &text[..at]),
            None => text.to_string(),
        };
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    } else if parsed.username().len() > 20 {
        // A long user name alone is most likely a token.
        let _ = parsed.set_username("***");
    }
    if parsed.query_pairs().any(|(name, _)| secret_param(&name)) {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(name, value)| {
                let value = if secret_param(&name) {
                    "***".to_string()
                } else {
                    value.into_owned()
                };
                (name.into_owned(), value)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

/// `scheme://host[:port]` of a URL: what errors about a request name.
pub fn host(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(host), Some(port)) => format!("{}://{host}:{port}", u.scheme()),
            (Some(host), None) => format!("{}://{host}", u.scheme()),
            (None, _) => u.scheme().to_string(),
        },
        Err(_) => url(text.split(['/', '?', '#']).next().unwrap_or("")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_secret_parameters_are_hidden() {
        assert_eq!(
            url("postgres://tipoff:hunter2@db:5432/tipoff?sslmode=require&password=x"),
            "postgres://tipoff:***@db:5432/tipoff?sslmode=require&password=***"
        );
        assert_eq!(
            url("https://rpc.example/?api-key=abc&cluster=main#frag"),
            "https://rpc.example/?api-key=***&cluster=main#frag"
        );
        for p in [
            "apikey",
            "token",
            "key",
            "secret",
            "X-Api-Key",
            "access_token",
            "client_secret",
        ] {
            assert_eq!(
                url(&format!("https://h/p?{p}=s3cr3t")),
                format!("https://h/p?{p}=***")
            );
        }
        assert_eq!(url("https://h/v1/embeddings"), "https://h/v1/embeddings");
        assert_eq!(url("not a url"), "not a url");
        assert_eq!(
            host("https://user:pw@api.example.com:8443/v1?api-key=secret"),
            "https://api.example.com:8443"
        );
    }
}
