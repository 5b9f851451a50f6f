//! What the bench measures: the fleet's addresses and credentials, and how it runs.

/// How the API roles run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// `adze-ingest` and `adze-dispatcher` on their own ports (the bench talks to each).
    Separate,
    /// `adze server --roles ingest,dispatcher` on one port, for SDKs that need one address.
    Combined,
    /// Every role in one `adze server` process on one port (the all-in-one layout).
    Single,
}

/// Where and how to reach the fleet.
#[derive(Debug, Clone)]
pub struct Target {
    /// Client services (ingest).
    pub grpc: String,
    /// The Dispatcher service.
    pub dispatcher: String,
    pub token: String,
    pub prefix: String,
    pub nats_url: String,
    /// (database URL, database name, created by the bench).
    pub database: Option<(String, String, bool)>,
    /// Processes whose RSS and CPU are reported, by name.
    pub pids: Vec<(String, u32)>,
    /// The CA that signed the fleet's certificate, when its API ports speak TLS.
    pub tls_ca: Option<std::path::PathBuf>,
}

/// `postgres://…/name` for the database `name` on the admin URL's server.
pub fn database_url(admin: &str, name: &str) -> String {
    let (base, query) = admin
        .split_once('?')
        .map_or((admin, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let server = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::database_url;

    #[test]
    fn database_url_replaces_the_path() {
        assert_eq!(
            database_url("postgres://u@h:5432/postgres", "b"),
            "postgres://u@h:5432/b"
        );
        assert_eq!(
            database_url("postgres://u@h:5432", "b"),
            "postgres://u@h:5432/b"
        );
        assert_eq!(
            database_url("postgres://u@h/postgres?sslmode=disable", "b"),
            "postgres://u@h/b?sslmode=disable"
        );
    }
}
