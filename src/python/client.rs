//! The connection options of `StateManager.redis_client`, a redis-py client on the same
//! server as the manager: the same URL rules, password, TLS files and Sentinels.

use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::errors::IntoPy;
use crate::config::{ClusterUrl, Config, SentinelUrl, PASSWORD_ENV_VAR};

/// `{"url": ...}`, for a Sentinel URL `{"sentinels": [(host, port)], "service_name": ...}`, for
/// a cluster URL `{"cluster_nodes": [(host, port)]}`, plus `password`, `username`, `db` and the TLS and timeout options redis-py takes.
pub fn redis_py_options<'py>(
    py: Python<'py>,
    config: &Config,
    timeout: Duration,
) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    let url = config.effective_url();
    let env_password = std::env::var(PASSWORD_ENV_VAR)
        .ok()
        .filter(|p| !p.is_empty());
    let tls = if SentinelUrl::is_sentinel(&url) {
        let parsed = SentinelUrl::parse(&url).py_err(py)?;
        out.set_item("sentinels", parsed.sentinels.clone())?;
        out.set_item("service_name", &parsed.service_name)?;
        out.set_item("db", parsed.db)?;
        out.set_item("username", parsed.username.clone())?;
        out.set_item("password", parsed.password.clone().or(env_password))?;
        let (user, password) = config.effective_sentinel_auth();
        out.set_item("sentinel_username", user)?;
        out.set_item("sentinel_password", password)?;
        parsed.tls
    } else if ClusterUrl::is_cluster(&url) {
        let parsed = ClusterUrl::parse(&url).py_err(py)?;
        out.set_item("cluster_nodes", parsed.seeds.clone())?;
        out.set_item("username", parsed.username.clone())?;
        out.set_item("password", parsed.password.clone().or(env_password))?;
        parsed.tls
    } else {
        let url = match url.strip_prefix("redis+unix://") {
            Some(path) => format!("unix://{path}"),
            None => url.clone(),
        };
        // redis-py takes the URL's password over this one, as the core does.
        out.set_item("password", env_password)?;
        let tls = url.starts_with("rediss://");
        out.set_item("url", url)?;
        tls
    };
    out.set_item("ssl", tls)?;
    if tls {
        let path = |p: std::path::PathBuf| p.to_string_lossy().into_owned();
        out.set_item("ssl_ca_certs", config.effective_tls_ca_file().map(path))?;
        let (cert, key) = config.effective_tls_client_cert().unzip();
        out.set_item("ssl_certfile", cert.map(path))?;
        out.set_item("ssl_keyfile", key.map(path))?;
    }
    out.set_item("timeout", timeout.as_secs_f64())?;
    Ok(out)
}
