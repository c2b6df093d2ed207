//! What `slipway up` starts: how many replicas of each part, on which database, on
//! which addresses, with which flags. One replica each on SQLite is the default; with
//! `--database-url postgres://…` every part may run as `--replicas N`, all sharing the
//! one database, each caller given every replica of a backend as a comma-separated
//! URL list (balanced over those serving, see `common::balance`).

use std::{net::SocketAddr, path::Path};

use anyhow::bail;

/// The parts in start order (stopped in reverse: gateways first).
pub const PARTS: [&str; 4] = ["auth", "registry", "deploy", "gateway"];

/// How many replicas of each part, and their database.
pub struct Topology {
    pub replicas: usize,
    /// `None`: a SQLite file per part in the data dir.
    database_url: Option<String>,
}

impl Topology {
    /// Checks the combination: several replicas share a PostgreSQL database.
    pub fn of(replicas: u16, database_url: Option<&str>) -> anyhow::Result<Topology> {
        let postgres = database_url.is_some_and(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"));
        if replicas > 1 && !postgres {
            bail!(
                "--replicas {replicas} needs --database-url postgres://…: the replicas share one \
                 PostgreSQL database (a SQLite file belongs to one process)"
            );
        }
        Ok(Topology {
            replicas: usize::from(replicas.max(1)),
            database_url: database_url.map(str::to_owned),
        })
    }

    /// The auth service's database (where `up` makes sure of the admin user).
    pub fn auth_database(&self, data_dir: &Path) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => common::db::sqlite_url(data_dir, "auth.db"),
        }
    }

    /// The database, for the startup output (without a password).
    pub fn describe(&self) -> String {
        match &self.database_url {
            Some(url) => format!(
                "{} ({} replica(s) of each part)",
                common::db::redacted(url),
                self.replicas
            ),
            None => "SQLite files in the data dir".to_owned(),
        }
    }

    /// The name of replica `index` (from 0) of `part`: the part's own name when it runs
    /// once, `auth-1`, `auth-2`, … otherwise.
    pub fn name(&self, part: &str, index: usize) -> String {
        match self.replicas {
            1 => part.to_owned(),
            _ => format!("{part}-{}", index + 1),
        }
    }

    /// The environment of a part's processes: the database URL for the backends (in
    /// the environment, out of `ps`).
    pub fn env(&self, part: &str) -> Vec<(&'static str, String)> {
        match (&self.database_url, part) {
            (Some(url), "auth" | "registry" | "deploy") => vec![("SLIPWAY_DATABASE_URL", url.clone())],
            _ => Vec::new(),
        }
    }
}

/// The addresses of every replica, chosen before any starts (the parts name each
/// other): the first gateway on `http`.
pub struct Addresses {
    pub auth: Vec<SocketAddr>,
    pub registry: Vec<SocketAddr>,
    pub deploy: Vec<SocketAddr>,
    pub gateway: Vec<SocketAddr>,
}

impl Addresses {
    pub fn choose(replicas: usize, http: SocketAddr) -> anyhow::Result<Addresses> {
        let ports = |n: usize| -> anyhow::Result<Vec<SocketAddr>> {
            (0..n).map(|_| Ok(common::server::free_loopback_port()?)).collect()
        };
        let mut gateway = vec![http];
        gateway.extend(ports(replicas - 1)?);
        Ok(Addresses {
            auth: ports(replicas)?,
            registry: ports(replicas)?,
            deploy: ports(replicas)?,
            gateway,
        })
    }

    /// One part's replicas, as the URL list its callers are given.
    pub fn urls(addrs: &[SocketAddr]) -> String {
        addrs
            .iter()
            .map(|a| format!("http://{a}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn of(&self, part: &str) -> &[SocketAddr] {
        match part {
            "auth" => &self.auth,
            "registry" => &self.registry,
            "deploy" => &self.deploy,
            _ => &self.gateway,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_need_postgres() {
        assert!(Topology::of(1, None).is_ok());
        assert!(Topology::of(1, Some("sqlite:///tmp/x.db")).is_ok());
        let error = Topology::of(2, None).err().unwrap().to_string();
        assert!(error.contains("--database-url postgres://"), "{error}");
        assert!(Topology::of(2, Some("sqlite:///tmp/x.db")).is_err());
        let topology = Topology::of(3, Some("postgres://u:secret@db/slipway")).unwrap();
        assert_eq!(topology.name("deploy", 0), "deploy-1");
        assert!(!topology.describe().contains("secret"));
        assert_eq!(Topology::of(1, None).unwrap().name("deploy", 0), "deploy");
    }

    #[test]
    fn callers_get_every_replica() {
        let addrs: Vec<SocketAddr> = ["127.0.0.1:1", "127.0.0.1:2"].map(|a| a.parse().unwrap()).to_vec();
        assert_eq!(Addresses::urls(&addrs), "http://127.0.0.1:1,http://127.0.0.1:2");
        assert_eq!(Addresses::urls(&addrs[..1]), "http://127.0.0.1:1");
    }
}
