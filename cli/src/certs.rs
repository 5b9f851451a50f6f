//! `adze dev certs`: a self-signed set for local TLS and mTLS, made with rcgen: a CA,
//! a server certificate for this machine (and any `--host`), and a client certificate.
//! Keys are written readable by their owner only.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use chrono::{Datelike, Days, NaiveDate, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, date_time_ymd,
};

/// Local development helpers.
#[derive(clap::Subcommand)]
pub enum DevCmd {
    /// Make a self-signed CA, server and client certificate for local TLS and mTLS.
    Certs(CertsArgs),
}

/// `adze dev certs` flags.
#[derive(clap::Args)]
pub struct CertsArgs {
    /// Directory to write the files to (created if missing).
    #[arg(long, default_value = ".adze/certs")]
    pub dir: PathBuf,
    /// More names or IP addresses for the server certificate, besides localhost,
    /// 127.0.0.1 and ::1 (repeat the flag).
    #[arg(long = "host", value_name = "NAME")]
    pub hosts: Vec<String>,
    /// Replace files already in the directory.
    #[arg(long)]
    pub force: bool,
}

/// Runs a `dev` command.
pub fn dev(cmd: DevCmd) -> anyhow::Result<()> {
    match cmd {
        DevCmd::Certs(args) => {
            let set = generate(&args.dir, &args.hosts, args.force)?;
            print!("{}", set.instructions());
            Ok(())
        }
    }
}

/// The files of a generated set.
#[derive(Debug, Clone)]
pub struct CertSet {
    /// The CA certificate: clients trust it, and under mTLS the server checks client
    /// certificates against it.
    pub ca_cert: PathBuf,
    /// The CA's key (to sign more certificates with other tools).
    pub ca_key: PathBuf,
    /// The server certificate, signed by the CA.
    pub server_cert: PathBuf,
    /// The server's key.
    pub server_key: PathBuf,
    /// A client certificate for mTLS, signed by the CA.
    pub client_cert: PathBuf,
    /// The client's key.
    pub client_key: PathBuf,
    /// The names the server certificate is valid for.
    pub server_names: Vec<String>,
}

/// The names every server certificate carries.
const LOCAL_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// How long the certificates are valid (a day back, against clock skew).
const VALID_DAYS: u64 = 825;

/// Writes a new set into `dir`. Refuses to replace existing files unless `force`.
pub fn generate(dir: &Path, hosts: &[String], force: bool) -> anyhow::Result<CertSet> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the directory {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    let mut server_names: Vec<String> = LOCAL_NAMES.iter().map(|n| n.to_string()).collect();
    for host in hosts {
        if !server_names.contains(host) {
            server_names.push(host.clone());
        }
    }
    let set = CertSet {
        ca_cert: dir.join("ca.pem"),
        ca_key: dir.join("ca.key"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
        server_names,
    };
    let files = [
        &set.ca_cert,
        &set.ca_key,
        &set.server_cert,
        &set.server_key,
        &set.client_cert,
        &set.client_key,
    ];
    if !force && let Some(existing) = files.iter().find(|f| f.exists()) {
        anyhow::bail!(
            "{} already exists: pass --force to replace the set (clients trusting the old CA \
             will have to trust the new one), or choose another --dir",
            existing.display()
        );
    }

    let [(y0, m0, d0), (y1, m1, d1)] = validity()?;
    let (not_before, not_after) = (date_time_ymd(y0, m0, d0), date_time_ymd(y1, m1, d1));
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    // Its own name: a client checking another set's certificates then reports an
    // unknown issuer rather than a bad signature from a namesake.
    let tag: String = ca_key.public_key_raw()[1..5]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    ca.distinguished_name.push(
        DnType::CommonName,
        format!("Adze local development CA {tag}"),
    );
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = not_before;
    ca.not_after = not_after;
    let ca_cert = ca.self_signed(&ca_key)?;
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca, ca_key);

    let leaf = |names: Vec<String>, common_name: &str, usage: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.signed_by(&key, &issuer)?;
        Ok::<_, rcgen::Error>((cert.pem(), key.serialize_pem()))
    };
    let (server_pem, server_key) = leaf(
        set.server_names.clone(),
        "Adze server",
        ExtendedKeyUsagePurpose::ServerAuth,
    )
    .context("cannot make the server certificate (is every --host a DNS name or an IP?)")?;
    let (client_pem, client_key) = leaf(
        Vec::new(),
        "Adze client",
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;

    write(&set.ca_cert, &ca_cert.pem(), Access::Public)?;
    write(&set.ca_key, &ca_key_pem, Access::Owner)?;
    write(&set.server_cert, &server_pem, Access::Public)?;
    write(&set.server_key, &server_key, Access::Owner)?;
    write(&set.client_cert, &client_pem, Access::Public)?;
    write(&set.client_key, &client_key, Access::Owner)?;
    Ok(set)
}

/// The first and last day of validity as (year, month, day).
fn validity() -> anyhow::Result<[(i32, u8, u8); 2]> {
    let today = Utc::now().date_naive();
    let start = today
        .checked_sub_days(Days::new(1))
        .context("today's date is out of range")?;
    let end = today
        .checked_add_days(Days::new(VALID_DAYS))
        .context("the expiry date is out of range")?;
    let ymd = |d: NaiveDate| (d.year(), d.month() as u8, d.day() as u8);
    Ok([ymd(start), ymd(end)])
}

/// Who may read a written file.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Public,
    /// Mode 0600: private keys.
    Owner,
}

fn write(path: &Path, content: &str, access: Access) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let mode = if access == Access::Owner {
            0o600
        } else {
            0o644
        };
        options.mode(mode);
        // A file replaced with --force keeps its old mode through `open`: set it first.
        if path.exists() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .with_context(|| format!("cannot set the mode of {}", path.display()))?;
        }
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(content.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

impl CertSet {
    /// What was written and how to use it: server settings and SDK variables.
    pub fn instructions(&self) -> String {
        let p = |path: &PathBuf| path.display().to_string();
        let dir = self
            .ca_cert
            .parent()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        let (ca, server, server_key) =
            (p(&self.ca_cert), p(&self.server_cert), p(&self.server_key));
        let (client, client_key) = (p(&self.client_cert), p(&self.client_key));
        format!(
            r#"Wrote a local CA and certificates to {dir} (keys readable by you only):
  ca.pem, ca.key          the CA: clients trust it; under mTLS the server checks clients against it
  server.pem, server.key  the server, for {names}
  client.pem, client.key  a client, for mTLS

Serve TLS:
  export ADZE_SERVER__TLS__MODE=tls
  export ADZE_SERVER__TLS__CERT_FILE={server}
  export ADZE_SERVER__TLS__KEY_FILE={server_key}
or in the config file:
  [server.tls]
  mode = "tls"
  cert_file = "{server}"
  key_file = "{server_key}"
For mTLS, also:
  export ADZE_SERVER__TLS__MODE=mtls
  export ADZE_SERVER__TLS__CLIENT_CA_FILE={ca}

SDKs (Python, TypeScript, Rust):
  export HATCHET_CLIENT_TLS_STRATEGY=tls
  export HATCHET_CLIENT_TLS_ROOT_CA_FILE={ca}
For mTLS, also:
  export HATCHET_CLIENT_TLS_STRATEGY=mtls
  export HATCHET_CLIENT_TLS_CERT_FILE={client}
  export HATCHET_CLIENT_TLS_KEY_FILE={client_key}
The TypeScript SDK's REST calls trust the CA through Node:
  export NODE_EXTRA_CA_CERTS={ca}
Tokens carry the REST address: once TLS is configured `adze token create` writes
https://127.0.0.1:7077 unless ADZE_SERVER__PUBLIC_URL says otherwise.
"#,
            names = self.server_names.join(", "),
        )
    }
}
