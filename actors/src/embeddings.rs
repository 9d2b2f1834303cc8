//! A client for the OpenAI-compatible embeddings API (`POST {url}/v1/embeddings` with
//! `{"model", "input": [..]}` → `{"data": [{"index", "embedding"}]}`), which OpenAI, Ollama,
//! llama.cpp's server, vLLM and text-embeddings-inference all serve.
//!
//! Every answer is checked before anyone uses it: one vector per input (placed by `index`),
//! every vector of one dimension, finite numbers. Errors name the host, never the URL or the
//! API key (either may carry a credential).

use std::time::Duration;

use crate::settings::{self, NonZero, Secret};
use serde::Deserialize;
use serde_json::json;

/// Why a call failed. The `backfill` service absorbs every kind and backs off.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EmbedError {
    #[error("embeddings API at {host} answered HTTP {status}")]
    Http {
        host: String,
        status: u16,
        retry_after: Option<Duration>,
    },
    #[error("embeddings API at {host} timed out")]
    Timeout { host: String },
    #[error("embeddings API at {host} unreachable: {cause}")]
    Transport { host: String, cause: String },
    #[error("embeddings API at {host} answered something unusable: {cause}")]
    Malformed { host: String, cause: String },
}

impl EmbedError {
    /// How long the API asked us to wait (HTTP `Retry-After` on a 429 or 503), if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            EmbedError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// The embeddings API's settings; the embedding backfill and hybrid search run only when
/// `embeddings_url` is set (keyword search needs nothing).
#[derive(Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct EmbeddingsConfig {
    /// An OpenAI-compatible embeddings API: requests go to `{url}/v1/embeddings` (a trailing
    /// `/v1` is accepted too; a query string, such as an `api-key`, is kept).
    #[serde(rename = "embeddings_url", deserialize_with = "settings::http_url")]
    pub url: Option<String>,
    /// The model (backfill and query vectors); vectors are stored per model.
    #[serde(rename = "embeddings_model")]
    pub model: String,
    /// Sent as `Authorization: Bearer …` when set.
    #[serde(rename = "embeddings_api_key", deserialize_with = "settings::secret")]
    pub api_key: Option<Secret>,
    /// Whole-request timeout per call, and connect timeout.
    #[serde(rename = "embeddings_timeout", with = "NonZero")]
    pub timeout: Duration,
    #[serde(rename = "embeddings_connect_timeout", with = "NonZero")]
    pub connect_timeout: Duration,
}

impl Default for EmbeddingsConfig {
    fn default() -> Self {
        EmbeddingsConfig {
            url: None,
            model: "text-embedding-3-small".into(),
            api_key: None,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl settings::Section for EmbeddingsConfig {
    fn check(&self) -> Result<(), settings::Invalid> {
        let model = self.model.trim();
        if model.is_empty() || model.len() > 200 || model != self.model {
            return Err(settings::Invalid::new(
                "embeddings_model",
                "must be a model name of 1 to 200 characters",
            ));
        }
        Ok(())
    }
}

impl std::fmt::Debug for EmbeddingsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingsConfig")
            .field("host", &self.url.as_deref().map(crate::redact::host))
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// One pooled client, shared by the `backfill` service and the search handlers.
#[derive(Debug, Clone)]
pub struct EmbeddingsClient {
    http: reqwest::Client,
    endpoint: String,
    host: String,
    model: String,
    api_key: Option<String>,
}

#[derive(Deserialize)]
struct Answer {
    data: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    index: Option<usize>,
    embedding: Vec<f64>,
}

impl EmbeddingsClient {
    /// `instance` names this replica in the `User-Agent` (see [`crate::user_agent`]).
    pub fn new(config: &EmbeddingsConfig, instance: &str) -> Result<Self, String> {
        let url = config
            .url
            .as_deref()
            .ok_or("TIPOFF_EMBEDDINGS_URL is not set")?;
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .user_agent(crate::user_agent(instance))
            .build()
            .map_err(|e| e.to_string())?;
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, format!("?{query}")),
            None => (url, String::new()),
        };
        let base = base.trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base);
        Ok(EmbeddingsClient {
            http,
            endpoint: format!("{base}/v1/embeddings{query}"),
            host: crate::redact::host(url),
            model: config.model.clone(),
            api_key: config.api_key.as_ref().map(|k| k.expose().to_string()),
        })
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// The embedding of every input, in input order; within `deadline` when given (shorter
    /// than the client's own timeout, for a search that must answer in time).
    pub async fn embed(
        &self,
        inputs: &[String],
        deadline: Option<Duration>,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut req = self
            .http
            .post(&self.endpoint)
            .json(&json!({"model": self.model, "input": inputs}));
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key);
        }
        if let Some(deadline) = deadline {
            req = req.timeout(deadline);
        }
        let host = || self.host.clone();
        let res = req.send().await.map_err(|e| self.transport(e))?;
        let status = res.status();
        if !status.is_success() {
            let retry_after = crate::upstream::retry_after(&res);
            return Err(EmbedError::Http {
                host: host(),
                status: status.as_u16(),
                retry_after,
            });
        }
        let body = res.bytes().await.map_err(|e| self.transport(e))?;
        let malformed = |cause: String| EmbedError::Malformed {
            host: host(),
            cause,
        };
        let answer: Answer = serde_json::from_slice(&body)
            .map_err(|e| malformed(format!("not an embeddings answer ({e})")))?;
        if answer.data.len() != inputs.len() {
            return Err(malformed(format!(
                "{} vectors for {} inputs",
                answer.data.len(),
                inputs.len()
            )));
        }
        let mut out: Vec<Option<Vec<f32>>> = vec![None; inputs.len()];
        for (position, item) in answer.data.into_iter().enumerate() {
            let index = item.index.unwrap_or(position);
            let slot = out
                .get_mut(index)
                .ok_or_else(|| malformed(format!("index {index} is out of range")))?;
            if slot.is_some() {
                return Err(malformed(format!("index {index} answered twice")));
            }
            if item.embedding.is_empty() || item.embedding.iter().any(|x| !x.is_finite()) {
                return Err(malformed(format!(
                    "the vector at index {index} is empty or not finite"
                )));
            }
            *slot = Some(item.embedding.into_iter().map(|x| x as f32).collect());
        }
        let out: Vec<Vec<f32>> = out.into_iter().map(|v| v.expect("filled")).collect();
        if let Some(first) = out.first() {
            if let Some(odd) = out.iter().find(|v| v.len() != first.len()) {
                return Err(malformed(format!(
                    "vectors of different dimensions ({} and {})",
                    first.len(),
                    odd.len()
                )));
            }
        }
        Ok(out)
    }

    fn transport(&self, e: reqwest::Error) -> EmbedError {
        if e.is_timeout() {
            EmbedError::Timeout {
                host: self.host.clone(),
            }
        } else if e.is_decode() || e.is_body() {
            EmbedError::Malformed {
                host: self.host.clone(),
                cause: "the answer broke off".into(),
            }
        } else {
            EmbedError::Transport {
                host: self.host.clone(),
                cause: e.without_url().to_string(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key() {
        let c = EmbeddingsConfig {
            url: Some("https://k:secret@x.test/?key=secret".into()),
            model: "m".into(),
            api_key: Some(Secret::new("sk-secret")),
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }
}
