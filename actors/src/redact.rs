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
/// `***` (everything else, including the user name, host and path, is kept).
pub fn url(url: &str) -> String {
    let (head, fragment) = match url.split_once('#') {
        Some((h, f)) => (h, Some(f)),
        None => (url, None),
    };
    let (base, query) = match head.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (head, None),
    };
    let mut out = match base.find("://") {
        Some(scheme_end) => {
            let rest = &base[scheme_end + 3..];
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => {
                    let userinfo = &rest[..at];
                    let user = userinfo.split(':').next().unwrap_or("");
                    let hidden = if userinfo.contains(':') {
                        format!("{user}:***")
                    } else if user.len() > 20 {
                        // A long user name alone is most likely a token.
                        "***".to_string()
                    } else {
                        user.to_string()
                    };
                    format!("{}{hidden}{}", &base[..scheme_end + 3], &rest[at..])
                }
                None => base.to_string(),
            }
        }
        None => base.to_string(),
    };
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if secret_param(name) => format!("{name}=***"),
                _ => pair.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

/// `scheme://host[:port]` of a URL: what errors about a request name.
pub fn host(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or(authority);
    if scheme.is_empty() {
        host.to_string()
    } else {
        format!("{scheme}://{host}")
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
