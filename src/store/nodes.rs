//! How to reach one data node found at run time (a master named by the Sentinels, the owner
//! of a cluster slot): the URL's credentials and database, and TLS with the configured
//! certificates when the URL asked for it.

use redis::{
    Client, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, RedisResult, TlsCertificates,
};

use crate::config::PASSWORD_ENV_VAR;

pub(super) struct NodeTemplate {
    settings: RedisConnectionInfo,
    /// `None`: plain TCP; `Some(None)`: TLS with the system roots; `Some(Some(_))`: TLS with
    /// the CA (and client pair) configured.
    tls: Option<Option<TlsCertificates>>,
}

impl NodeTemplate {
    /// The password is the URL's, else `REDIS_PASSWORD`.
    pub(super) fn new(
        db: i64,
        username: Option<&str>,
        password: Option<&str>,
        tls: Option<Option<TlsCertificates>>,
    ) -> Self {
        let mut settings = RedisConnectionInfo::default().set_db(db);
        if let Some(user) = username {
            settings = settings.set_username(user);
        }
        let password = password.map(str::to_owned).or_else(|| {
            std::env::var(PASSWORD_ENV_VAR)
                .ok()
                .filter(|p| !p.is_empty())
        });
        if let Some(password) = password {
            settings = settings.set_password(password);
        }
        NodeTemplate { settings, tls }
    }

    pub(super) fn client(&self, addr: &(String, u16)) -> RedisResult<Client> {
        let (host, port) = addr.clone();
        let node_addr = match &self.tls {
            None => ConnectionAddr::Tcp(host, port),
            Some(_) => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: false,
                tls_params: None,
            },
        };
        let info = node_addr
            .into_connection_info()?
            .set_redis_settings(self.settings.clone());
        match &self.tls {
            Some(Some(certs)) => Client::build_with_tls(info, certs.clone()),
            _ => Client::open(info),
        }
    }
}
