//! A Confluent-compatible schema registry, over HTTP or HTTPS: schemas by
//! ID and subjects' versions, and registering a schema under a subject
//! (for the routes that opt in).
//!
//! Every answer is classified for the record path: a schema or subject the
//! registry says it does not have ([`FetchError::NotFound`], its own
//! `404xx` error codes) is a fact about the record; anything else that
//! goes wrong (no connection, a time-out, a 5xx, refused credentials, a
//! 404 that is not the registry's, an answer that does not parse) says
//! nothing about the record ([`FetchError::Unavailable`]): its record waits
//! and the request is made again. A schema the registry will not register
//! (incompatible with the subject's, or invalid) is
//! [`FetchError::Refused`].

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_tls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use super::dir::RegistrySchema;
use super::{Format, SchemaText};

/// Answers larger than this are refused (a schema is at most a few hundred
/// KiB; a registry's own limit is lower).
const MAX_ANSWER: usize = 16 << 20;
const MEDIA_TYPES: &str = "application/vnd.schemaregistry.v1+json, application/json";

/// How to reach a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrySettings {
    /// `http(s)://host:port[/path]`.
    pub url: String,
    /// Credentials sent with every request.
    pub auth: Auth,
    /// PEM file of the certificate authorities to trust (default: the
    /// system's).
    pub ca_file: Option<PathBuf>,
    /// PEM files of a client certificate and its PKCS#8 key (mutual TLS).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// How long one request may take, connection included.
    pub timeout: Duration,
}

/// Registry credentials.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Auth {
    /// None.
    #[default]
    None,
    /// HTTP basic authentication (Confluent Cloud: an API key and secret).
    Basic {
        /// The user (or API key).
        username: String,
        /// The password (or API secret).
        password: String,
    },
    /// A bearer token.
    Bearer(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets stay out of logs.
        match self {
            Self::None => f.write_str("None"),
            Self::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Self::Bearer(_) => f.write_str("Bearer(***)"),
        }
    }
}

/// Why a schema could not be had from the registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The registry says it has no such schema, subject or version.
    #[error("{0}")]
    NotFound(String),
    /// The registry could not be asked, or its answer is unusable: the
    /// request is worth making again.
    #[error("{0}")]
    Unavailable(String),
    /// The registry will not register a schema: why, in its words.
    #[error("{0}")]
    Refused(String),
}

/// A registry client.
#[derive(Clone)]
pub struct Registry {
    base: String,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    authorization: Option<HeaderValue>,
    timeout: Duration,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("url", &self.base)
            .finish_non_exhaustive()
    }
}

/// A registry's error answer.
#[derive(Debug, Deserialize)]
struct RegistryError {
    error_code: i64,
    message: Option<String>,
}

impl Registry {
    /// A client of the registry `settings` describe.
    ///
    /// # Errors
    /// When the URL is not an http(s) URL, or the TLS files cannot be read
    /// or used: the setting at fault (`url`, `ca_file`, `cert_file`) and
    /// why.
    pub fn new(settings: &RegistrySettings) -> Result<Self, (&'static str, String)> {
        let base = settings.url.trim_end_matches('/').to_owned();
        let uri: Uri = base
            .parse()
            .map_err(|e| ("url", format!("'{}' is not a URL: {e}", settings.url)))?;
        match uri.scheme_str() {
            Some("http" | "https") if uri.host().is_some() => {}
            _ => {
                return Err((
                    "url",
                    format!(
                        "'{}' is not an http:// or https:// URL with a host",
                        settings.url
                    ),
                ));
            }
        }
        if uri.query().is_some() {
            return Err((
                "url",
                format!(
                    "'{}' has a query; give the registry's base URL",
                    settings.url
                ),
            ));
        }
        let mut tls = native_tls::TlsConnector::builder();
        if let Some(path) = &settings.ca_file {
            let at_fault = |why: String| ("ca_file", format!("'{}': {why}", path.display()));
            let pem = std::fs::read(path).map_err(|e| at_fault(e.to_string()))?;
            let certificates = native_tls::Certificate::stack_from_pem(&pem)
                .map_err(|e| at_fault(e.to_string()))?;
            if certificates.is_empty() {
                return Err(at_fault("no PEM certificate in it".to_owned()));
            }
            for certificate in certificates {
                tls.add_root_certificate(certificate);
            }
        }
        if let Some((cert, key)) = &settings.client_cert {
            let read = |path: &PathBuf| {
                std::fs::read(path).map_err(|e| ("cert_file", format!("'{}': {e}", path.display())))
            };
            let identity =
                native_tls::Identity::from_pkcs8(&read(cert)?, &read(key)?).map_err(|e| {
                    (
                        "cert_file",
                        format!(
                            "client certificate '{}' with key '{}': {e}",
                            cert.display(),
                            key.display()
                        ),
                    )
                })?;
            tls.identity(identity);
        }
        let tls = tls.build().map_err(|e| ("ca_file", format!("TLS: {e}")))?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(settings.timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(HttpsConnector::from((http, tls.into())));
        let authorization = match &settings.auth {
            Auth::None => None,
            Auth::Basic { username, password } => {
                let token = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{password}"));
                Some(format!("Basic {token}"))
            }
            Auth::Bearer(token) => Some(format!("Bearer {token}")),
        }
        .map(|value| {
            let mut value = HeaderValue::from_str(&value).map_err(|_| {
                (
                    "password_env",
                    "the credentials hold characters a header cannot".to_owned(),
                )
            })?;
            value.set_sensitive(true);
            Ok::<_, (&'static str, String)>(value)
        })
        .transpose()?;
        Ok(Self {
            base,
            client,
            authorization,
            timeout: settings.timeout,
        })
    }

    /// The registry's base URL.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.base
    }

    /// Schema `id` (`GET /schemas/ids/{id}`).
    ///
    /// # Errors
    /// [`FetchError`], classified.
    pub async fn by_id(&self, id: u32) -> Result<SchemaText, FetchError> {
        let answer = self
            .get(&format!("/schemas/ids/{id}"), &format!("schema {id}"))
            .await?;
        answer.into_text().map_err(|e| {
            FetchError::Unavailable(format!("the registry's answer for schema {id}: {e}"))
        })
    }

    /// Version `version` of `subject` (its latest when `None`), with its ID
    /// (`GET /subjects/{subject}/versions/{version}`).
    ///
    /// # Errors
    /// [`FetchError`], classified.
    pub async fn by_subject(
        &self,
        subject: &str,
        version: Option<i32>,
    ) -> Result<(u32, SchemaText), FetchError> {
        let version_text = version.map_or_else(|| "latest".to_owned(), |v| v.to_string());
        let what = format!("version {version_text} of subject '{subject}'");
        let answer = self
            .get(
                &format!(
                    "/subjects/{}/versions/{version_text}",
                    encode_segment(subject)
                ),
                &what,
            )
            .await?;
        let Some(id) = answer.id else {
            return Err(FetchError::Unavailable(format!(
                "the registry's answer for {what} has no id"
            )));
        };
        let text = answer.into_text().map_err(|e| {
            FetchError::Unavailable(format!("the registry's answer for {what}: {e}"))
        })?;
        Ok((id, text))
    }

    /// Whether the registry answers (`GET /schemas/types`; any answer but
    /// a 5xx is a registry that is up).
    ///
    /// # Errors
    /// Why it does not answer.
    pub async fn ping(&self) -> Result<(), FetchError> {
        let (status, _) = self.request(Method::GET, "/schemas/types", None).await?;
        if status.is_server_error() {
            return Err(FetchError::Unavailable(format!(
                "the registry answered {status}"
            )));
        }
        Ok(())
    }

    /// Registers `schema` (without references) under `subject`
    /// (`POST /subjects/{subject}/versions`): its ID, the one the registry
    /// already has for it or a new one.
    ///
    /// # Errors
    /// [`FetchError`], classified: [`FetchError::Refused`] when the
    /// registry will not have the schema.
    pub async fn register(&self, subject: &str, schema: &SchemaText) -> Result<u32, FetchError> {
        #[derive(Deserialize)]
        struct Registered {
            id: u32,
        }
        let mut body = serde_json::json!({ "schema": schema.text });
        match schema.format {
            // A registry's default type.
            Format::Avro => {}
            Format::Protobuf => body["schemaType"] = "PROTOBUF".into(),
            Format::Json => body["schemaType"] = "JSON".into(),
        }
        let what = format!(
            "the {} schema to register under subject '{subject}'",
            schema.format.name()
        );
        let path = format!("/subjects/{}/versions", encode_segment(subject));
        let (status, answer) = self
            .request(Method::POST, &path, Some(body.to_string().into()))
            .await?;
        if status == StatusCode::OK {
            return serde_json::from_slice::<Registered>(&answer)
                .map(|registered| registered.id)
                .map_err(|e| {
                    FetchError::Unavailable(format!(
                        "the registry's answer to {what} has no ID ({e}): {}",
                        excerpt(&answer)
                    ))
                });
        }
        Err(self.classify(status, &answer, &what))
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes), FetchError> {
        let uri = format!("{}{path}", self.base);
        let mut request = Request::builder()
            .method(method.clone())
            .uri(&uri)
            .header(ACCEPT, MEDIA_TYPES);
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/vnd.schemaregistry.v1+json");
        }
        if let Some(authorization) = &self.authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        let request = request
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| FetchError::Unavailable(format!("{method} {uri}: {e}")))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                let mut reason = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(cause) = source {
                    reason = format!("{reason}: {cause}");
                    source = cause.source();
                }
                reason
            })?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?
                .to_bytes();
            Ok::<_, String>((status, body))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(reason)) => Err(FetchError::Unavailable(format!("{method} {uri}: {reason}"))),
            Err(_) => Err(FetchError::Unavailable(format!(
                "{method} {uri}: no answer within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }

    async fn get(&self, path: &str, what: &str) -> Result<RegistrySchema, FetchError> {
        let (status, body) = self.request(Method::GET, path, None).await?;
        if status == StatusCode::OK {
            return serde_json::from_slice(&body).map_err(|e| {
                FetchError::Unavailable(format!(
                    "the registry's answer for {what} is not a schema ({e}): {}",
                    excerpt(&body)
                ))
            });
        }
        Err(self.classify(status, &body, what))
    }

    /// What an answer other than `200 OK` means.
    fn classify(&self, status: StatusCode, body: &[u8], what: &str) -> FetchError {
        let error: Option<RegistryError> = serde_json::from_slice(body).ok();
        let detail = error
            .as_ref()
            .and_then(|e| e.message.clone())
            .unwrap_or_else(|| excerpt(body));
        match (status, error) {
            // 40401 subject, 40402 version, 40403 schema not found.
            (StatusCode::NOT_FOUND, Some(e)) if (40400..40500).contains(&e.error_code) => {
                FetchError::NotFound(format!(
                    "the registry has no {what} ({} {detail})",
                    e.error_code
                ))
            }
            // 409: incompatible with the subject's versions; 422: not a
            // valid schema (registering only).
            (StatusCode::CONFLICT | StatusCode::UNPROCESSABLE_ENTITY, Some(e)) => {
                FetchError::Refused(format!(
                    "the registry refused {what} ({} {detail})",
                    e.error_code
                ))
            }
            (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, _) => FetchError::Unavailable(
                format!("the registry refused the credentials for {what} ({status}): {detail}"),
            ),
            (StatusCode::NOT_FOUND, None) => FetchError::Unavailable(format!(
                "{} answered {status} for {what} without a registry error: is it the registry's URL? {detail}",
                self.base
            )),
            _ => FetchError::Unavailable(format!(
                "the registry answered {status} for {what}: {detail}"
            )),
        }
    }
}

/// The start of an answer, for messages.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty answer)".to_owned();
    }
    let cut: String = text.chars().take(200).collect();
    if cut.len() < text.len() {
        format!("{cut}…")
    } else {
        cut
    }
}

/// `segment` percent-encoded for a URL path (subjects hold `/`, `:`...).
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_percent_encoded() {
        assert_eq!(encode_segment("orders-value"), "orders-value");
        assert_eq!(encode_segment("shop/common.proto"), "shop%2Fcommon.proto");
        assert_eq!(encode_segment(":.ctx:a b"), "%3A.ctx%3Aa%20b");
    }

    #[test]
    fn urls_that_are_not_a_registry_base_are_refused() {
        let settings = |url: &str| RegistrySettings {
            url: url.to_owned(),
            auth: Auth::None,
            ca_file: None,
            client_cert: None,
            timeout: Duration::from_secs(1),
        };
        assert!(Registry::new(&settings("http://127.0.0.1:8081/")).is_ok());
        assert!(Registry::new(&settings("https://registry.example/prefix")).is_ok());
        for bad in [
            "registry:8081",
            "ftp://host/",
            "http://host/?x=1",
            "not a url",
        ] {
            assert!(Registry::new(&settings(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let basic = Auth::Basic {
            username: "key".to_owned(),
            password: "hunter2".to_owned(),
        };
        assert_eq!(format!("{basic:?}"), "Basic(key, ***)");
        assert!(!format!("{:?}", Auth::Bearer("t0k3n".to_owned())).contains("t0k3n"));
    }
}
