//! The config file as written: raw TOML structs that mirror DESIGN.md's names, with
//! spans kept so that every later error can point at its line and column.

// Keys of later features are parsed (so their names and types are checked) before
// their values are read.
#![allow(dead_code)]

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// How long live connections may run on after SIGTERM before they are cut.
    pub drain_timeout: Option<S<String>>,
    pub admin: Option<S<FileAdmin>>,
    pub resolver: Option<S<FileResolver>>,
    pub rate_limit: Option<S<FileSharedLimits>>,
    #[serde(default, rename = "listener")]
    pub listeners: Vec<S<FileListener>>,
    #[serde(default, rename = "pool")]
    pub pools: Vec<S<FilePool>>,
}

/// `[rate_limit]`: limits shared across instances through Redis.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSharedLimits {
    pub redis: Option<S<String>>,
    pub on_redis_failure: Option<S<String>>,
}

/// `[resolver]`: where DNS backends are looked up (default: /etc/resolv.conf).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileResolver {
    pub nameservers: Vec<S<String>>,
    pub timeout: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAdmin {
    pub bind: S<String>,
    pub token_file: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileListener {
    pub name: S<String>,
    pub protocol: Option<S<String>>,
    pub bind: S<String>,
    pub pool: Option<S<String>>,
    pub connect_timeout: Option<S<String>>,
    pub idle_timeout: Option<S<String>>,
    pub retries: Option<S<u32>>,
    pub max_connections: Option<S<u32>>,
    pub max_connections_per_client: Option<S<u32>>,
    pub proxy_protocol: Option<S<String>>,
    pub accept_proxy_protocol: Option<S<bool>>,
    pub https_redirect: Option<S<bool>>,
    pub compress: Option<S<Vec<S<String>>>>,
    pub compress_types: Option<S<Vec<S<String>>>>,
    pub compress_min_size: Option<S<String>>,
    pub error_pages: Option<S<BTreeMap<String, S<String>>>>,
    pub rate_limit: Option<S<FileRateLimit>>,
    pub allow: Option<S<Vec<S<String>>>>,
    pub deny: Option<S<Vec<S<String>>>>,
    pub flow_idle_timeout: Option<S<String>>,
    pub responses: Option<S<u32>>,
    pub max_flows: Option<S<u32>>,
    pub access_log: Option<S<bool>>,
    pub header_read_timeout: Option<S<String>>,
    pub http2_idle_timeout: Option<S<String>>,
    pub request_timeout: Option<S<String>>,
    pub upstream_idle_timeout: Option<S<String>>,
    pub body_read_timeout: Option<S<String>>,
    pub send_timeout: Option<S<String>>,
    pub request_buffer: Option<S<String>>,
    pub max_request_body: Option<S<String>>,
    pub retry_on: Option<S<Vec<S<String>>>>,
    pub try_timeout: Option<S<String>>,
    pub trust_forwarded: Option<S<bool>>,
    pub normalize_path: Option<S<bool>>,
    pub http1_engine: Option<S<String>>,
    pub tls: Option<S<Vec<FileCert>>>,
    pub client_ca: Option<S<String>>,
    pub route: Option<S<Vec<S<FileRoute>>>>,
    pub headers: Option<S<FileHeaders>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCert {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRoute {
    pub host: Option<S<String>>,
    pub path_prefix: Option<S<String>>,
    pub path: Option<S<String>>,
    pub method: Option<S<String>>,
    pub headers: Option<S<BTreeMap<String, FileHeaderMatch>>>,
    pub pool: Option<S<String>>,
    pub split: Option<S<Vec<S<FileSplit>>>>,
    pub sni: Option<S<String>>,
    pub redirect: Option<S<FileRedirect>>,
    pub rate_limit: Option<S<FileRateLimit>>,
    pub strip_prefix: Option<S<String>>,
    pub replace_prefix: Option<S<FileReplace>>,
    pub set_host: Option<S<String>>,
}

/// `redirect = { scheme = "https", host = "...", path = "...", code = 308 }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRedirect {
    pub scheme: Option<S<String>>,
    pub host: Option<S<String>>,
    pub path: Option<S<String>>,
    pub code: Option<S<u16>>,
}

/// `rate_limit = { rate = "100/s", burst = 200, key = "source-ip" }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRateLimit {
    pub rate: S<String>,
    pub burst: Option<S<u32>>,
    pub key: Option<S<String>>,
}

/// `replace_prefix = { from = "/v1/", to = "/" }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileReplace {
    pub from: S<String>,
    pub to: S<String>,
}

/// `"value"` (exact) or `true` (present with any value).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum FileHeaderMatch {
    Exact(String),
    Present(bool),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSplit {
    pub pool: S<String>,
    pub weight: S<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHeaders {
    pub request_add: Option<S<BTreeMap<String, String>>>,
    pub request_remove: Option<S<Vec<String>>>,
    pub response_add: Option<S<BTreeMap<String, String>>>,
    pub response_remove: Option<S<Vec<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePool {
    pub name: S<String>,
    pub algorithm: Option<S<String>>,
    pub hash_key: Option<S<String>>,
    pub sticky_cookie: Option<S<String>>,
    pub slow_start: Option<S<String>>,
    pub backends: S<Vec<S<FileBackend>>>,
    pub health: Option<S<FileHealth>>,
    pub fail_open: Option<S<bool>>,
    pub eject_after: Option<S<u32>>,
    pub eject_time: Option<S<String>>,
    pub eject_after_5xx: Option<S<u32>>,
    pub max_ejection_percent: Option<S<u32>>,
    pub max_connections: Option<S<u32>>,
    pub max_queue: Option<S<u32>>,
    pub queue_timeout: Option<S<String>>,
    pub tls: Option<S<FilePoolTls>>,
    pub http_version: Option<S<String>>,
}

/// `tls = { verify = true, ca = "...", sni = "...", cert = "...", key = "..." }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePoolTls {
    pub verify: Option<bool>,
    pub ca: Option<String>,
    pub sni: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

/// A backend is either `"ADDR"` or `{ addr = "ADDR", weight = N, resolve = "30s" }`.
#[derive(Debug)]
pub enum FileBackend {
    Addr(String),
    Table(FileBackendTable),
}

impl<'de> Deserialize<'de> for FileBackend {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Hand-written rather than `untagged` so that a typo inside the table is
        // reported as that key, not as "matched no variant".
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = FileBackend;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(r#"a backend: "IP:PORT" or { addr = "IP:PORT", weight = N }"#)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<FileBackend, E> {
                Ok(FileBackend::Addr(v.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<FileBackend, A::Error> {
                let d = serde::de::value::MapAccessDeserializer::new(map);
                FileBackendTable::deserialize(d).map(FileBackend::Table)
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBackendTable {
    pub addr: String,
    pub weight: Option<u32>,
    pub resolve: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHealth {
    pub kind: Option<S<String>>,
    pub interval: Option<S<String>>,
    pub timeout: Option<S<String>>,
    pub rise: Option<S<u32>>,
    pub fall: Option<S<u32>>,
    pub path: Option<S<String>>,
    pub host: Option<S<String>>,
    pub expect_status: Option<S<String>>,
    pub send: Option<S<String>>,
    pub expect: Option<S<String>>,
    pub service: Option<S<String>>,
}
